"""What visitors may see of the server: names, never absolute paths.

The page and ``/info`` name a bundle, model or dataset by its Hub repo id, or by its folder's name
when it is local; messages that quote a server path (startup failures mostly) show only the
path's last part. The full paths go to the server log.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..data.bundle import is_repo_id

#: An absolute (or home-relative) POSIX path inside a message, not part of a URL or a relative path.
_PATH = re.compile(r"(?<![\w.:/~\\-])~?/[^\s'\"<>|,;()\[\]]*[^\s'\"<>|,;()\[\].:]")


def public_name(source: str | Path | None) -> str | None:
    """A Hub repo id as it is; a local path as its last part (``/srv/bundles/v3`` -> ``v3``)."""
    if source is None:
        return None
    source = str(source)
    return source if is_repo_id(source) else Path(source).name or source


def without_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last part."""
    return _PATH.sub(lambda match: Path(match.group(0)).name or "/", text)
