"""A plain-text account of what a pipeline will do, with every default made visible."""

from pydantic import BaseModel

from conveyor.extensions import Options
from conveyor.spec.durations import format_duration, format_size
from conveyor.spec.models import Environment, Health, Job, Notifier, Pipeline


def explain_pipeline(p: Pipeline) -> str:
    """Jobs in topological stages, the environment chain, and notifications."""
    d = p.defaults
    lines = [f"service: {p.service}", f"triggers: {_triggers(p)}"]
    if p.concurrency:
        lines.append(f"concurrency: {p.concurrency}")
    lines.append(
        f"defaults: timeout {format_duration(d.timeout)}, shell {d.shell}, retries {d.retries}, "
        f"parallelism {d.parallelism or 'runner capacity'}, log limit {format_size(d.log_limit)}"
    )
    stages = p.job_order()
    lines += ["", f"jobs: {_count(len(p.jobs), 'job')} in {_count(len(stages), 'stage')}"]
    for number, names in enumerate(stages, 1):
        lines.append(f"  stage {number}:")
        lines += [f"    {name}: {_job(p, p.jobs[name])}" for name in names]

    lines.append("")
    order = p.environment_order()
    if not order:
        lines.append("environments: none (no deployments)")
    else:
        lines.append("environments:")
        lines += [f"  chain: {' -> '.join(chain)}" for chain in _chains(p)]
        for name in order:
            lines += _environment(name, p.environments[name])

    lines.append("")
    if not p.notify:
        lines.append("notify: none")
    else:
        lines.append("notify:")
        lines += [f"  {_notifier(n)}" for n in p.notify]
    return "\n".join(lines) + "\n"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _triggers(p: Pipeline) -> str:
    parts: list[str] = []
    if p.on and p.on.push:
        text = f"push to {', '.join(p.on.push.branches)}"
        if p.on.push.paths:
            text += f" touching {', '.join(p.on.push.paths)}"
        parts.append(text)
    if p.on and p.on.poll:
        poll = p.on.poll
        parts.append(
            f"poll {poll.url} every {format_duration(poll.interval)} for {', '.join(poll.branches)}"
        )
    return "; ".join(parts) or "none (runs start only when asked)"


def _job(p: Pipeline, job: Job) -> str:
    timeout = job.timeout if job.timeout is not None else p.defaults.timeout
    retries = job.retries if job.retries is not None else p.defaults.retries
    steps = job.steps or []
    parts = [
        f"needs {', '.join(job.needs)}" if job.needs else "needs nothing",
        _count(len(steps) if job.steps else 1, "step"),
        f"timeout {format_duration(timeout)}",
        f"retries {retries}",
        f"artifacts {', '.join(job.artifacts)}" if job.artifacts else "no artifacts",
        f"image {job.image}" if job.image else "no image (runs on the host)",
        f"runs on {', '.join(job.runs_on)}" if job.runs_on else "runs on any runner",
    ]
    if job.if_ != "success":
        parts.append(f"if {job.if_}")
    if job.continue_on_error:
        parts.append("continues on error")
    return "; ".join(parts)


def _chains(p: Pipeline) -> list[list[str]]:
    """Every path from an environment that follows nothing to one nothing follows."""
    children: dict[str, list[str]] = {name: [] for name in p.environments}
    roots: list[str] = []
    for name in p.environment_order():
        after = p.environments[name].after
        if after in children:
            children[after].append(name)
        else:
            roots.append(name)
    chains: list[list[str]] = []
    todo = [[root] for root in reversed(roots)]
    while todo:
        chain = todo.pop()
        following = children[chain[-1]]
        if not following:
            chains.append(chain)
        todo += [[*chain, child] for child in reversed(following)]
    return chains


def _environment(name: str, env: Environment) -> list[str]:
    head = f"  {name}: tier {env.tier}"
    if env.after:
        head += f", after {env.after}"
    deploy = env.deploy
    target = f"target {deploy.target}, strategy {deploy.strategy}"
    if deploy.start:
        target += f", start: {deploy.start}"
    if deploy.options:
        target += ", options: " + ", ".join(f"{k}={v}" for k, v in sorted(deploy.options.items()))
    lines = [head, f"    deploy: {target}", f"    approval: {_approval(env)}"]
    lines.append(f"    health: {_health(env.health)}")
    if env.verify:
        lines.append(f"    verify: {_count(len(env.verify), 'step')}")
        lines += [f"      - {v.name or v.run.strip().splitlines()[0]}" for v in env.verify]
    else:
        lines.append("    verify: none")
    extras = f"on_failure: {env.on_failure}, keep {env.keep} releases"
    if env.supersede:
        extras += ", newest release supersedes queued ones"
    lines.append(f"    {extras}")
    return lines


def _approval(env: Environment) -> str:
    a = env.approval
    if a is None:
        return "none"
    self_ok = "self-approval allowed" if a.self_approval else "no self-approval"
    return (
        f"{a.required} of [{', '.join(a.approvers)}], {self_ok}, "
        f"timeout {format_duration(a.timeout)} (then {a.on_timeout})"
    )


def _health(health: Health | None) -> str:
    if health is None:
        return "none (done as soon as deployed)"
    return "; ".join(f"{name} {_explain(check)}" for name, check in health.configured().items())


def _notifier(n: Notifier) -> str:
    where = f"{n.kind} {_explain(n.channel)}".strip()
    return f"{where} on {', '.join(n.on)}"


def _explain(options: BaseModel) -> str:
    if isinstance(options, Options):
        return options.explain()
    return ", ".join(f"{k} {v}" for k, v in options.model_dump(exclude_defaults=True).items())
