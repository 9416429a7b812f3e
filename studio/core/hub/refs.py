"""Hub repo references (`org/name[@revision]`) and the one sentence for each way opening one fails."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from studio.core.errors import StudioError

# The Hub's rule for a model repo id: namespace/name of letters, digits, "-", "_" and ".".
_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<revision>[^\s@]+))?$")


@dataclass(frozen=True)
class RepoRef:
    repo_id: str
    revision: str | None = None  # branch, tag or commit; None means the default branch

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def parse_ref(text: str) -> RepoRef | None:
    """`org/name` or `org/name@revision` as a RepoRef, anything else None."""
    m = _REF.match(text.strip())
    if m is None or ".." in m.group("repo") or m.group("repo").endswith((".", "-")):
        return None
    return RepoRef(m.group("repo"), m.group("revision"))


def hub_ref(text: str) -> RepoRef | None:
    """The Hub repo `text` names, or None when it is a local path (one that exists, or looks like a path)."""
    text = str(text)
    if text.startswith(("/", ".", "~")) or "\\" in text or Path(text).expanduser().exists():
        return None
    return parse_ref(text)


def endpoint() -> str:
    """The Hub huggingface_hub talks to (HF_ENDPOINT when set), read at call time."""
    from huggingface_hub import constants

    return constants.ENDPOINT


@contextlib.contextmanager
def hub_errors(ref: RepoRef | str, action: str = "open"):
    """Turn huggingface_hub's and the network's exceptions into one clear StudioError."""
    from huggingface_hub.utils import httpx
    from huggingface_hub import errors

    try:
        yield
    except StudioError:
        raise
    except errors.GatedRepoError:
        raise StudioError(f"{ref} is a gated repo and your Hugging Face token has no access to it: accept its "
                          "terms on its Hub page, then log in (`hf auth login` or HF_TOKEN).") from None
    except errors.RevisionNotFoundError:
        revision = ref.revision if isinstance(ref, RepoRef) else None
        raise StudioError(f"{ref.repo_id if isinstance(ref, RepoRef) else ref} has no revision "
                          f"{revision!r} on the Hub." if revision else f"{ref} has no such revision on the Hub.") from None
    except errors.RepositoryNotFoundError:
        repo = ref.repo_id if isinstance(ref, RepoRef) else ref
        raise StudioError(f"{repo} is neither a local folder nor a model repo on the Hub that your token can "
                          "see (check the name, or log in for a private repo).") from None
    except errors.DisabledRepoError:
        raise StudioError(f"{ref} has been disabled on the Hub.") from None
    except errors.OfflineModeIsEnabled:
        raise StudioError(f"cannot {action} {ref}: huggingface_hub is in offline mode (HF_HUB_OFFLINE is set).") \
            from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise StudioError(f"the Hub answered HTTP {status} when asked to {action} {ref}.") from None
    except (httpx.TransportError, ConnectionError, TimeoutError) as exc:
        raise StudioError(f"cannot reach the Hub at {endpoint()} to {action} {ref} ({type(exc).__name__}); "
                          "check the network connection.") from None
