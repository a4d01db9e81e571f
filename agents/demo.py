"""The end-to-end demo (``make demo``) and the demo data ``make run`` loads.

The demo starts a real Celery worker in another process on whatever database
and broker the settings name (the embedded default under ``make demo``),
waits for it to register its agents, sends a task through every queue, stops
the worker and checks its agents went offline.
"""
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from agents.data.paths import data_root
from agents.data.samples import customers_frame, orders_csv_write
from agents.data.selectors import data_run_json
from agents.data.services import data_run_enqueue, pipeline_load_file
from agents.decisions.services import rules_load_file
from agents.exceptions import AgentsError
from agents.models import (
    Agent,
    AgentStatus,
    AgentTask,
    Alert,
    Check,
    DataRun,
    DataRunStatus,
    MessageReceipt,
    Notification,
    Pool,
    RunStatus,
    TriggerFiring,
    WorkflowRun,
)
from agents.monitoring import selectors as monitoring_selectors
from agents.monitoring import services as monitoring_services
from agents.monitoring.services import checks_dispatch, definitions_load
from agents.orchestration import agent_tasks, messages
from agents.orchestration.events import triggers_load
from agents.setup import admin_username
from agents.workflows.selectors import run_to_dict
from agents.workflows.services import pool_set, workflow_load_file, workflow_run_start
from workers.decision import decide
from workers.registry import agent_ping


DEMO_WORKFLOW = settings.BASE_DIR / "examples" / "workflows" / "order_fulfilment.yaml"
EXAMPLE_WORKFLOWS = settings.BASE_DIR / "examples" / "workflows"
#: The pools the example workflows' steps name, with their slots (as each example's header says to create them).
EXAMPLE_POOLS = {"payments": 2}
#: The groups the example workflows name as approvers (payment-approval's sign-off): made when missing, with the
#: permission to send a workflow signal, and the admin ``make run`` creates (``AGENTS_ADMIN_USERNAME``) made a member,
#: so the demo's approval can be given.
EXAMPLE_APPROVERS = ("finance",)
DEMO_BRANCHING = EXAMPLE_WORKFLOWS / "order_routing.yaml"
DEMO_RULES = settings.BASE_DIR / "examples" / "rules" / "loan_approval.yaml"
DEMO_PIPELINES = [settings.BASE_DIR / "examples" / "pipelines" / name
                  for name in ("orders_clean.yaml", "revenue_by_region.yaml")]
DEMO_ORDERS = 20_000
DEMO_CHECKS = settings.BASE_DIR / "examples" / "monitoring" / "checks.yaml"


class DemoError(AgentsError):
    """A step of the demo did not reach the outcome it waits for."""


def _wait_for(predicate, *, timeout_s: float, what: str):
    """Poll ``predicate`` every 0.2 s until it returns a truthy value; raise ``DemoError`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _demo_workflow(*, timeout_s: float, path=DEMO_WORKFLOW) -> dict:
    """Run an example DAG (by default: fan-out, a retried step, a join) through the worker and report it."""
    version, _ = workflow_load_file(path=str(path))
    run = workflow_run_start(version=version)
    _wait_for(
        lambda: WorkflowRun.objects.filter(pk=run.pk, status__in=(RunStatus.SUCCEEDED, RunStatus.FAILED)).exists(),
        timeout_s=timeout_s,
        what=f"workflow run {run.pk} to finish",
    )
    result = run_to_dict(run)
    if result["status"] != RunStatus.SUCCEEDED:
        raise DemoError(f"workflow run {run.pk} {result['status']}: {result['error']}")
    return {
        "run_id": result["run_id"],
        "workflow": result["workflow"],
        "version": result["version"],
        "status": result["status"],
        "duration_s": result["duration_s"],
        "steps": {step_id: {"status": step["status"], "attempts": step["attempts"],
                            **({"why": step["error"]} if step["status"] == "skipped" else {})}
                  for step_id, step in result["steps"].items()},
        **({"picked": [item["value"] for item in result["steps"]["pick"]["result"]]}
           if "pick" in result["steps"] else {}),
    }


def _demo_decision(*, timeout_s: float) -> dict:
    """Decide a loan through the worker's decision queue and report the answer with its trace."""
    rules_load_file(path=str(DEMO_RULES), activate=True)
    context = {"amount": 8000, "applicant": {"credit_score": 760, "income": 52000, "country": "DE",
                                             "email": "ann@example.org"}}
    result = decide.delay("loan-approval", context).get(timeout=timeout_s)
    if result["decision"] != "approve":
        raise DemoError(f"the demo loan was decided {result['decision']!r}, expected 'approve': {result['reasoning']}")
    return {key: result[key] for key in ("decision", "confidence", "engine", "rule_ids", "reasoning", "ruleset",
                                         "ruleset_version", "decision_id", "trace")}


def demo_data_write() -> None:
    """Write the generated orders (with known defects) and customers the example pipelines read."""
    folder = data_root() / "demo"
    orders_csv_write(folder / "orders.csv", DEMO_ORDERS)
    folder.mkdir(parents=True, exist_ok=True)
    customers_frame().to_csv(folder / "customers.csv", index=False)


def _demo_data(*, timeout_s: float) -> dict:
    """Run the example pipelines on a data agent: clean generated orders, then aggregate the published dataset."""
    demo_data_write()
    report = []
    for path in DEMO_PIPELINES:
        run = data_run_enqueue(version=pipeline_load_file(path=str(path))[0])
        _wait_for(
            lambda: DataRun.objects.filter(pk=run.pk, status__in=(DataRunStatus.SUCCEEDED, DataRunStatus.FAILED)).exists(),
            timeout_s=timeout_s, what=f"data run {run.pk} to finish",
        )
        result = data_run_json(DataRun.objects.select_related("version__pipeline").get(pk=run.pk))
        if result["status"] != DataRunStatus.SUCCEEDED:
            raise DemoError(f"data run {run.pk} of {result['pipeline']} failed: {result['error']}")
        report.append({
            **{key: result[key] for key in ("run_id", "pipeline", "status", "rows_in", "rows_out", "output",
                                            "duration_s", "peak_memory_mb")},
            "quality": [{key: check[key] for key in ("name", "status", "element_count", "unexpected_count",
                                                    "unexpected_percent")} | {"sample": check["sample"][:2]}
                        for check in result["quality"]],
        })
    return {"pipelines": report}


def _dispatch_until(predicate, *, timeout_s: float, what: str):
    """Play celery-beat's part: run the monitoring dispatcher every 0.2 s until ``predicate`` holds."""
    def tick():
        checks_dispatch()
        return predicate()

    return _wait_for(tick, timeout_s=timeout_s, what=what)


def _demo_monitoring(*, timeout_s: float) -> dict:
    """Run the default checks on the monitoring agent, then make a local endpoint fail and recover: its alert
    goes pending, fires, and resolves by itself, with a notice for each."""



    monitoring_services.definitions_load(text=DEMO_CHECKS.read_text(), source=str(DEMO_CHECKS))
    Check.objects.update(next_run_at=timezone.now())
    _dispatch_until(lambda: not Check.objects.filter(last_run_at__isnull=True).exists(),
                    timeout_s=timeout_s, what="the default checks to run")
    health = {"status": 200}

    class Endpoint(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(health["status"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        check, _ = monitoring_services.check_save(name="demo-endpoint", fields=monitoring_services.check_fields(
            {"name": "demo-endpoint", "type": "http", "params": {"url": url, "timeout_s": 2}, "interval_s": 1,
             "max_attempts": 2, "tags": ["demo"]}))
        Check.objects.filter(pk=check.pk).update(next_run_at=timezone.now())
        _dispatch_until(lambda: Check.objects.get(pk=check.pk).last_status == "ok",
                        timeout_s=timeout_s, what="demo-endpoint to pass")
        health["status"] = 503
        alert = _dispatch_until(lambda: Alert.objects.filter(health_check=check, state="firing").first(),
                                timeout_s=timeout_s, what="the demo-endpoint alert to fire")
        health["status"] = 200
        _dispatch_until(lambda: Alert.objects.filter(pk=alert.pk, state="resolved").exists(),
                        timeout_s=timeout_s, what="the demo-endpoint alert to resolve")
        _wait_for(lambda: Notification.objects.filter(alert=alert, event="resolved", status="sent").exists(),
                  timeout_s=timeout_s, what="the resolved notice")
    finally:
        server.shutdown()
        server.server_close()
    alert.refresh_from_db()
    return {
        "checks": [{key: item[key] for key in ("name", "type", "status", "last_value", "unit", "message")}
                   for item in monitoring_selectors.checks_json() if item["name"] != "demo-endpoint"],
        "alert": {key: value for key, value in monitoring_selectors.alert_json(alert).items()
                  if key in ("id", "check", "state", "severity", "summary", "count", "started_at", "fired_at",
                             "resolved_at", "resolved_by")},
        "notifications": [{key: note[key] for key in ("event", "route", "handler", "status")}
                          for note in monitoring_selectors.notifications_json(alert)],
    }


def _demo_orchestration(*, timeout_s: float) -> dict:
    """Agent tasks by type and priority, a request/response round trip, a broadcast, and the trigger that turned
    the monitoring demo's alert into an agent task carrying the alert's trace id."""
    tasks = [agent_tasks.task_submit(agent_type=agent_type, config={"action": "echo", "params": {"value": agent_type}},
                                     priority=priority, submitted_by="demo")
             for agent_type, priority in (("decision", 0), ("data", 9))]
    _wait_for(lambda: all(AgentTask.objects.get(pk=task.pk).status == "completed" for task in tasks),
              timeout_s=timeout_s, what="the agent tasks to complete")
    response = messages.message_request(recipient="type:workflow", payload={"action": "echo", "params": {"value": 42}},
                                        timeout_s=timeout_s, sender="demo")
    broadcast = messages.message_broadcast(message_type="status_update", payload={"demo": True}, sender="demo")
    _wait_for(lambda: MessageReceipt.objects.filter(message=broadcast).count() >= len(settings.AGENT_QUEUES),
              timeout_s=timeout_s, what="every agent to receive the broadcast")
    firing = _wait_for(lambda: TriggerFiring.objects.filter(trigger__name="demo-alert-to-task", status="succeeded")
                       .select_related("event").first(), timeout_s=timeout_s, what="the alert trigger to fire")
    triggered = _wait_for(lambda: AgentTask.objects.filter(pk=firing.result["agent_task_id"], status="completed").first(),
                          timeout_s=timeout_s, what="the triggered task to complete")
    alert = Alert.objects.get(pk=firing.event.payload["alert_id"])
    return {
        "tasks": [agent_tasks.task_json(AgentTask.objects.get(pk=task.pk)) for task in tasks],
        "request_response": {"correlation_id": response.correlation_id, "result": response.payload["result"]},
        "broadcast_receipts": sorted(MessageReceipt.objects.filter(message=broadcast).values_list("agent", flat=True)),
        "alert_trigger": {"event": firing.event.event_type, "alert_id": alert.pk, "agent_task_id": triggered.pk,
                          "task_result": triggered.result, "alert_trace_id": alert.trace_id,
                          "task_trace_id": triggered.trace_id, "same_trace": alert.trace_id == triggered.trace_id},
    }


def _demo_triggers_load() -> None:

    triggers_load(text="""
triggers:
  - name: demo-alert-to-task
    event: alert.fired
    filter: payload.check == 'demo-endpoint'
    action: task
    target: workflow
    params: {action: echo, params: {value: $.payload.summary}}
""", source="demo")


def demo_seed() -> dict:
    """Load demo data for ``make run``: the example workflows, one run of each, and a task through each queue."""
    queues = ["default", *settings.AGENT_QUEUES]
    for queue in queues:
        agent_ping.apply_async(queue=queue)

    for name, slots in EXAMPLE_POOLS.items():  # a step naming a pool that does not exist is refused at load
        if not Pool.objects.filter(name=name).exists():  # an operator's pool keeps its slots
            pool_set(name=name, slots=slots, description="made by the demo for the example workflows")
    demo_approvers_ensure()
    versions = [workflow_load_file(path=str(path))[0] for path in sorted(EXAMPLE_WORKFLOWS.iterdir())]
    for version in versions:
        workflow_run_start(version=version)
    rules = rules_load_file(path=str(DEMO_RULES), activate=True)[0]
    decide.delay(rules.ruleset.name, {"amount": 8000, "applicant": {"credit_score": 760, "income": 52000}})

    demo_data_write()
    pipelines = [pipeline_load_file(path=str(path))[0] for path in DEMO_PIPELINES]
    data_run_enqueue(version=pipelines[0])  # the second reads its dataset: run it from the admin afterwards

    checks = definitions_load(text=DEMO_CHECKS.read_text(), source=str(DEMO_CHECKS))["checks"]
    return {"checks": sum(checks.values()),"tasks_sent": len(queues), "workflows": [v.definition.name for v in versions],
            "rulesets": [rules.ruleset.name], "pipelines": [v.pipeline.name for v in pipelines]}


def demo_approvers_ensure() -> None:
    """``EXAMPLE_APPROVERS``' groups, each with the permission to send a signal, the admin a member of each."""
    from django.contrib.auth.models import Group, Permission, User

    signal_permission = Permission.objects.get(content_type__app_label="agents", codename="add_workflowsignal")
    admin = User.objects.filter(username=admin_username()).first()
    for name in EXAMPLE_APPROVERS:
        group, created = Group.objects.get_or_create(name=name)
        if created:  # an operator's group keeps its permissions and members
            group.permissions.add(signal_permission)
            if admin is not None:
                admin.groups.add(group)


def demo_run(*, timeout_s: float = 60.0) -> dict:
    """Run the end-to-end scenario and return its summary; raise ``DemoError`` when a step fails."""
    started = time.monotonic()
    call_command("migrate", verbosity=0, interactive=False)
    queues = ["default", *settings.AGENT_QUEUES]
    nodename = f"demo-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
    log_path = settings.VAR_DIR / "demo-worker.log"
    summary = {
        "ok": False,
        "database": connection.vendor,
        "broker": settings.CELERY_BROKER_URL.split("://", 1)[0],
        "result_backend": settings.CELERY_RESULT_BACKEND.split("://", 1)[0],
        "worker_log": str(log_path),
    }
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "agentsite", "worker", "-Q", ",".join(queues),
             "-n", nodename, "--concurrency", "2", "--loglevel", "INFO"],
            stdout=log, stderr=subprocess.STDOUT, cwd=settings.BASE_DIR, env=os.environ.copy(),
        )
    try:
        summary["worker"] = {"hostname": nodename, "pid": worker.pid}
        registered = _wait_for(
            lambda: worker.poll() is None
            and list(Agent.objects.filter(hostname=nodename, status=AgentStatus.IDLE).values("name", "agent_type")),
            timeout_s=timeout_s,
            what=f"worker {nodename} to register its agents (see {log_path})",
        )
        if len(registered) != len(settings.AGENT_QUEUES):
            raise DemoError(f"worker registered {len(registered)} agents, expected {len(settings.AGENT_QUEUES)}")
        summary["agents_registered"] = sorted(agent["name"] for agent in registered)
        results = {queue: agent_ping.apply_async(queue=queue) for queue in queues}
        summary["tasks"] = []
        for queue, result in results.items():
            answer = result.get(timeout=timeout_s)
            if answer["worker"] != nodename or answer["queue"] != queue:
                raise DemoError(f"task sent to {queue!r} was answered by {answer}")
            summary["tasks"].append({"queue": queue, "task_id": result.id, "answered_by": answer["worker"]})
        summary["workflow"] = _demo_workflow(timeout_s=timeout_s)
        summary["branching"] = _demo_workflow(timeout_s=timeout_s, path=DEMO_BRANCHING)  # when: and ${ } inputs
        summary["decision"] = _demo_decision(timeout_s=timeout_s)
        summary["data"] = _demo_data(timeout_s=timeout_s)
        _demo_triggers_load()
        summary["monitoring"] = _demo_monitoring(timeout_s=timeout_s)
        summary["orchestration"] = _demo_orchestration(timeout_s=timeout_s)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    summary["agents_offline_after_stop"] = not Agent.objects.filter(hostname=nodename).exclude(
        status=AgentStatus.OFFLINE
    ).exists()
    if not summary["agents_offline_after_stop"]:
        raise DemoError(f"agents of {nodename} were still online after the worker stopped")
    summary["ok"] = True
    summary["duration_s"] = round(time.monotonic() - started, 2)
    return summary
