import yaml

from cogniverse_assets.demo import prepare_instance
from cogniverse_resources.paths import REPO_ROOT


def test_the_demo_instance_keeps_the_projects_run_queue_except_the_limit_it_overrides(tmp_path):
    project = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())["run_coordinator"]["config"]

    prepare_instance(tmp_path / "default", ["t1"])
    one_at_a_time = prepare_instance(tmp_path / "serial", ["t1"], max_concurrent_runs=1)

    default = yaml.safe_load((tmp_path / "default" / "dagster.yaml").read_text())["run_coordinator"]["config"]
    assert default == project
    queue = one_at_a_time.run_coordinator.get_run_queue_config()
    assert queue.max_concurrent_runs == 1
    assert [limit["key"] for limit in queue.tag_concurrency_limits] == ["dagster/partition"]
    assert one_at_a_time.get_dynamic_partitions("tenants") == ["t1"]
