"""`/v1/clusters`: the people nobody has named yet, as the gallery holds them after `facepipe cluster` (or
`fp.cluster(...)`) ran on the photos where they are; look at them, name them, merge and split them, and say
"not this person". Clustering itself runs where the photos are, not over HTTP (the service would have to keep
every uploaded photo to show its faces later).

Routes (the page at / uses them to show each cluster as a grid of faces with a name box):
  GET    /v1/clusters                          every cluster: id, faces, face ids (largest first)
  GET    /v1/clusters/{id}                     its faces: id, photo, box
  GET    /v1/clusters/faces/{face_id}.jpg      one face, cropped from its photo (JPEG)
  POST   /v1/clusters/{id}/name    {"name"}    enroll its faces as that person (new or existing)
  POST   /v1/clusters/{id}/merge   {"other"}   move every face of `other` into it
  POST   /v1/clusters/{id}/split   {"faces"}   take those faces out (two or more: a new cluster)
  POST   /v1/persons/{name}/rejections {"face_id"}   "this face is not this person"
"""
from __future__ import annotations

import io
from pathlib import Path

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from facepipe.errors import GalleryError
from facepipe.names import person_name

THUMBNAIL = 112  # pixels, square


class NameBody(BaseModel):
    name: str = Field(..., description="The person's name (the one person-name rule applies).")


class MergeBody(BaseModel):
    other: int = Field(..., description="The cluster whose faces move into this one.")


class SplitBody(BaseModel):
    faces: list[int] = Field(..., min_length=1, max_length=10_000, description="Face ids to take out.")


class RejectBody(BaseModel):
    face_id: int = Field(..., description="A clustered face id (from /v1/clusters/{id}).")


def _missing_as_404(fn, *args):
    """The store says "no cluster N" / "no clustered face N" as a GalleryError (409 elsewhere): here a 404."""
    try:
        return fn(*args)
    except GalleryError as exc:
        if " no cluster" in str(exc) or " no clustered face" in str(exc):
            raise HTTPException(404, str(exc).split(": ", 1)[-1]) from None
        raise


def cluster_router(fp, run=run_in_threadpool) -> APIRouter:
    """run(fn, *args): how a blocking call is awaited (the app passes its bounded engine queue: a crop decodes
    a photo, and a flood of them must wait for a turn like any other engine work)."""
    api = APIRouter(tags=["clusters"])

    @api.get("/clusters")
    async def clusters() -> dict:
        """Every cluster, largest first, with its face ids."""
        def listing():
            return [{"cluster": c, "faces": n, "face_ids": [f.id for f in fp.cluster_faces(c)]}
                    for c, n in fp.clusters()]
        return {"clusters": await run(listing)}

    @api.get("/clusters/faces/{face_id}.jpg", response_class=Response)
    async def face_image(face_id: int) -> Response:
        """One face, cropped from its photo with a margin, as a small JPEG."""
        from facepipe.pipeline.cluster_sheet import face_crop

        def crop() -> bytes:
            face = _missing_as_404(fp.cluster_face, face_id)
            image = face_crop(face, THUMBNAIL)
            if image is None:
                raise HTTPException(404, f"the photo of face {face_id} is no longer readable: {face.source}")
            out = io.BytesIO()
            image.save(out, "JPEG", quality=85)
            return out.getvalue()
        return Response(await run(crop), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/clusters/{cluster}")
    async def cluster(cluster: int) -> dict:
        """The faces of one cluster: id, photo (file name), box."""
        faces = await run(_missing_as_404, fp.cluster_faces, cluster)
        return {"cluster": cluster, "faces": [{"face_id": f.id, "image": Path(f.source).name, "box": f.box,
                                               "score": round(f.score, 4)} for f in faces]}

    @api.post("/clusters/{cluster}/name")
    async def name(cluster: int, body: NameBody) -> dict:
        """Enroll the cluster's faces as a person: identify names them from now on."""
        person = person_name(body.name)  # 422 with the rule's own words when it breaks it
        n = await run(_missing_as_404, fp.name_cluster, cluster, person)
        return {"cluster": cluster, "person": person, "enrolled_faces": n}

    @api.post("/clusters/{cluster}/merge")
    async def merge(cluster: int, body: MergeBody) -> dict:
        """Two clusters are one person."""
        n = await run(_missing_as_404, fp.merge_clusters, cluster, body.other)
        return {"cluster": cluster, "merged": body.other, "moved_faces": n}

    @api.post("/clusters/{cluster}/split")
    async def split(cluster: int, body: SplitBody) -> dict:
        """Take faces out of a cluster; none of them comes back to it in a later run."""
        new = await run(_missing_as_404, fp.split_cluster, cluster, body.faces)
        return {"cluster": cluster, "new_cluster": new, "moved_faces": len(body.faces)}

    @api.post("/persons/{name}/rejections", tags=["gallery"])
    async def reject(name: str, body: RejectBody) -> dict:
        """"This face is not this person": identify and later cluster runs never name it so again."""
        person = person_name(name)
        removed = await run(_missing_as_404, fp.reject, person, body.face_id)
        return {"person": person, "face_id": body.face_id, "removed_faces": removed}

    return api
