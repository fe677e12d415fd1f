"""Push a finished run folder to the Hugging Face Hub (or any Hub endpoint ``HF_ENDPOINT`` names).

The token comes from ``HF_TOKEN`` or the stored login (``hf auth login``); it goes into the request
header only, and is never printed, logged or written into the folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nlpcompress.errors import UserError

logger = logging.getLogger(__name__)

# What a run folder holds that belongs on the Hub: the model, its card and records, and the deployed
# exports the card names (the resume data of an unfinished run, or a half-built export, never does).
UPLOAD_PATTERNS = [
    "*.json", "*.safetensors", "*.py", "*.md", "*.yaml", "*.txt", "*.model",
    "artifacts/**", "onnx/**", "openvino/**", "albert/**",
]  # fmt: skip


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload ``folder`` (an nlpcompress run folder) to ``repo_id``; returns the commit URL."""
    folder = Path(folder)
    if not (folder / "results.json").is_file() or not (folder / "model.safetensors").is_file():
        raise UserError(
            f"{folder} is not a finished nlpcompress run folder (no results.json and model.safetensors)"
        )
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"repo id {repo_id!r} must look like <user or organisation>/<name>")
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=check_push_possible())
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} (nlpcompress)",
            allow_patterns=UPLOAD_PATTERNS,
        )
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "no response"
        raise UserError(
            f"the Hub refused the push to {repo_id!r} (HTTP {status}: {_first_line(error)})"
        ) from None
    except (OSError, httpx2.TransportError) as error:  # unreachable endpoint, refused connection, DNS
        raise UserError(f"cannot reach the Hub to push {repo_id!r} ({_first_line(error)})") from None
    logger.info("pushed %s to %s", folder, commit.commit_url)
    return commit.commit_url


def check_push_possible() -> str:
    """The token to push with; a UserError when offline or without one (checked before a run trains)."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise UserError(
            "pushing needs the Hub, but HF_HUB_OFFLINE is set; unset it (or point HF_ENDPOINT at a Hub)"
        )
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again")
    return token


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]
