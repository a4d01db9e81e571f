"""The embedded default works across processes: `make demo` drives a worker in another process."""
import json

from tests.conftest import embedded_env, embedded_install, manage


def test_demo_runs_every_queue_through_a_worker_in_another_process(tmp_path):
    result = manage("demo", "--timeout", "60", env=embedded_env(tmp_path))

    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout)
    assert summary["ok"] is True
    assert (summary["database"], summary["broker"], summary["result_backend"]) == ("sqlite", "filesystem", "django-db")
    assert [task["queue"] for task in summary["tasks"]] == ["default", "workflow", "decision", "data", "monitoring"]
    assert {task["answered_by"] for task in summary["tasks"]} == {summary["worker"]["hostname"]}
    assert len(summary["agents_registered"]) == 4
    assert summary["agents_offline_after_stop"] is True
    workflow = summary["workflow"]
    assert (workflow["workflow"], workflow["status"]) == ("order-fulfilment", "succeeded")
    assert workflow["steps"]["charge_card"] == {"status": "succeeded", "attempts": 2}
    assert set(workflow["steps"]) == {"validate", "reserve_stock", "charge_card", "ship", "notify"}
    branching = summary["branching"]  # a large order: reviewed, not approved; the notice after the branch runs
    assert (branching["workflow"], branching["status"]) == ("order-routing", "succeeded")
    assert branching["steps"]["review"]["status"] == branching["steps"]["notify"]["status"] == "succeeded"
    assert branching["steps"]["approve"] == {"status": "skipped", "attempts": 1,
                                             "why": "condition false: not steps.assess.result.value.large"}
    assert branching["picked"] == ["line 0: apples", "line 1: pears", "line 2: plums"]  # a mapped step, in order
    decision = summary["decision"]
    assert (decision["decision"], decision["engine"], decision["rule_ids"]) == ("approve", "rules", ["small-and-solid"])
    assert decision["trace"][-1]["rule_id"] == "small-and-solid" and decision["trace"][-1]["matched"] is True


def test_make_run_s_demo_data_loads_every_example_on_a_new_install(tmp_path, embedded_migrated):
    """`make run` seeds the demo data on a new install: an example workflow naming a pool (payment approval's
    `payments`) stopped it with "pool 'payments' does not exist". Run twice, as every `make run` does."""
    env = embedded_install(tmp_path / "var", embedded_migrated)

    first = manage("demo_seed", env=env)
    again = manage("demo_seed", env=env)

    assert first.returncode == 0, first.stderr + first.stdout
    assert again.returncode == 0, again.stderr + again.stdout
    for example in ("payment-approval", "order-fulfilment", "order-routing"):
        assert example in first.stdout
