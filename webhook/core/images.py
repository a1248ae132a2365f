"""Container image references: which registry, which repository. Pure.

Written after the reference grammar of github.com/distribution/reference: the first component is
a registry only when it has a '.' or ':' or is `localhost`; an image without one is on Docker
Hub, where a one-component name lives under `library/`.
"""

from __future__ import annotations

DOCKER_HUB = "docker.io"


def split_image(image: str) -> tuple[str, str, str]:
    """(registry, repository, the rest: ":tag", "@digest", ":tag@digest" or "")."""
    first, sep, remainder = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, name = first, remainder
    else:
        registry, name = DOCKER_HUB, image
    at = name.find("@")
    colon = name.rfind(":", 0, at if at >= 0 else len(name))
    cut = colon if colon >= 0 else at
    repository, rest = (name[:cut], name[cut:]) if cut >= 0 else (name, "")
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository, rest


def with_registry(image: str, registry: str) -> str:
    """The image from another registry, as KKP's `overwriteRegistry` rewrites it."""
    if not registry:
        return image
    _, repository, rest = split_image(image)
    return f"{registry.rstrip('/')}/{repository}{rest}"


def same_repository(a: object, b: str) -> bool:
    """Whether `a` is an image of the same repository as `b`, from any registry (also under a
    project path, as `overwriteRegistry: harbor.example/kkp` gives), at any tag or digest."""
    if not isinstance(a, str) or not a:
        return False
    mine, wanted = split_image(a)[1], split_image(b)[1].removeprefix("library/")
    return mine == wanted or mine.endswith("/" + wanted)
