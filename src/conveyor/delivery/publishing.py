"""Publishing a release: its artifacts pushed to the pipeline's OCI registry as one artifact,
and the images its jobs pushed pinned by digest. Runs once per release, off the event loop."""

from __future__ import annotations

import string
from typing import Any

from sqlalchemy import select

from conveyor.delivery.publish import PublishError, publish_artifacts, resolve_image
from conveyor.engine.promotion import pipeline_of, version_of
from conveyor.runner.artifacts import ArtifactStore
from conveyor.store.db import Store
from conveyor.store.models import Artifact, Release


def image_variables(service: str, sha: str, registry: str | None) -> dict[str, str]:
    values = {"CONVEYOR_SERVICE": service, "CONVEYOR_SHA": sha, "CONVEYOR_SHORT_SHA": sha[:12]}
    if registry:
        values["CONVEYOR_REGISTRY"] = registry
    return values


def publish_release(store: Store, artifacts: ArtifactStore, release_id: int) -> dict[str, Any]:
    """Push and pin; returns the release's publication record (status published or failed)."""
    with store.session() as session:
        release = session.get(Release, release_id)
        assert release is not None
        pipeline = pipeline_of(release.run)
        service, sha, version = release.service.name, release.sha, version_of(release)
        files = session.execute(
            select(Artifact.path, Artifact.digest).where(Artifact.run_id == release.run_id)
        ).all()
    publish = pipeline.publish
    registry = publish.registry if publish else None
    insecure = publish.insecure if publish else False
    values = image_variables(service, sha, registry)
    record: dict[str, Any] = {"status": "published"}
    try:
        if publish is not None:
            if not files:
                record["artifact"] = None
            else:
                published = publish_artifacts(
                    registry=publish.registry,
                    repository=publish.repository or service,
                    tag=version,
                    files=[(artifacts.path_for(digest), path) for path, digest in files],
                    annotations={
                        "org.opencontainers.image.revision": sha,
                        "org.opencontainers.image.title": f"{service} {version}",
                    },
                    insecure=insecure,
                )
                record.update(
                    reference=published.reference,
                    digest=published.digest,
                    pinned=published.pinned,
                )
        images = [
            string.Template(image).safe_substitute(values)
            for job in pipeline.jobs.values()
            for image in job.images
        ]
        record["images"] = [resolve_image(image, insecure=insecure) for image in images]
    except PublishError as exc:
        return {"status": "failed", "error": exc.message}
    return record
