"""What every report page must be on a machine without internet: plotly.js embedded exactly once and
nothing fetched from elsewhere."""

import re

from plotly.offline import get_plotlyjs


def page_without_plotlyjs(page: str) -> str:
    """Assert the page is self-contained; return it without the embedded library, for further checks."""
    bundle = get_plotlyjs()
    assert page.count(bundle) == 1
    rest = page.replace(bundle, "")
    assert "plotly.js v" not in rest
    assert not re.search(r"<script[^>]*\ssrc\s*=", rest, re.I)
    assert "cdn.plot.ly" not in rest and "https://" not in rest
    return rest
