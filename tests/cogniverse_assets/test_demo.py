import dagster as dg
import yaml
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from cogniverse_assets.demo import cancel_queued_runs, prepare_instance
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


def test_the_demo_cancels_only_its_tenants_sensor_runs_still_waiting_in_the_queue(tmp_path):
    instance = prepare_instance(tmp_path / "home", ["acme", "other"])
    # A queued run names the job the daemon would launch; nothing here launches it.
    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="cogniverse_assets.definitions"))
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "optimize_lane")

    def run(tenant: str, status: dg.DagsterRunStatus, trigger: str = "trace_threshold_sensor") -> str:
        tags = {"tenant": tenant, "trigger": trigger}
        queued = dg.DagsterRun(job_name="optimize_lane", status=status, tags=tags, remote_job_origin=origin)
        return instance.add_run(queued).run_id

    queued = run("acme", dg.DagsterRunStatus.QUEUED)
    finished = run("acme", dg.DagsterRunStatus.SUCCESS)
    other_tenant = run("other", dg.DagsterRunStatus.QUEUED)
    launched_by_hand = run("acme", dg.DagsterRunStatus.QUEUED, trigger="backfill")

    assert cancel_queued_runs(instance, ["acme"]) == 1
    status = {run_id: instance.get_run_by_id(run_id).status for run_id in (queued, finished, other_tenant)}
    assert status == {
        queued: dg.DagsterRunStatus.CANCELED,
        finished: dg.DagsterRunStatus.SUCCESS,
        other_tenant: dg.DagsterRunStatus.QUEUED,
    }
    assert instance.get_run_by_id(launched_by_hand).status == dg.DagsterRunStatus.QUEUED
    assert cancel_queued_runs(instance, ["acme"]) == 0
