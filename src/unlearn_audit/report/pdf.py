"""The PDF view, for legal review: the HTML view laid out on pages by WeasyPrint.

The chain is report.json → HTML (render.py, the same template as report.html) → PDF, so the PDF shows
nothing the JSON does not hold. WeasyPrint was chosen over a headless browser because it is a maintained
Python package on PyPI (the ``pdf`` extra; it needs only Pango from the system), it implements CSS Paged
Media (running headers, ``counter(pages)``, ``break-inside`` on table rows), which Chromium's print path
does only in part, and it gives the same pages on every machine without a browser to install or drive.

The page's own resources are inline (CSS and SVG), so WeasyPrint is given a fetcher that refuses every
URL: a report.json that is not ours cannot make rendering reach the network or read a local file.
"""

from __future__ import annotations

from ..errors import InputError
from . import view
from .render import html

PAGE_SIZES = {"a4": "A4", "letter": "letter"}
INSTALL = "pip install 'unlearn-audit[pdf]'"


def engine():
    """WeasyPrint's HTML class, or a one-line input error naming the extra. WeasyPrint raises OSError, not
    ImportError, when the system's Pango library is missing; both mean the same to the user."""
    import warnings

    try:
        with warnings.catch_warnings():  # an advisory about the system's HarfBuzz build, not about this report
            warnings.simplefilter("ignore", DeprecationWarning)
            from weasyprint import HTML
    except ImportError:
        raise InputError(f"--format pdf needs WeasyPrint: {INSTALL}") from None
    except OSError as exc:
        raise InputError(f"--format pdf needs WeasyPrint and the Pango library it loads ({exc}); {INSTALL} "
                         "and install Pango (Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0)") from None
    return HTML


def paged_html(report: dict, paper: str = "a4") -> str:
    """The HTML view with its page furniture: the page size, the header's verdict and model hash, and the
    appendix of every input's sha256 and the command."""
    digest, hash_of = view.weights_digest(report["inputs"]["model"])
    return html(report, paged={"size": PAGE_SIZES[paper], "model_hash": digest, "hash_of": hash_of,
                               "hashes": view.input_hashes(report)})


def pdf(report: dict, paper: str = "a4") -> bytes:
    HTML = engine()
    from weasyprint.urls import URLFetcher

    no_fetch = URLFetcher(allowed_protocols=())  # refuses every URL: the page is self-contained
    return HTML(string=paged_html(report, paper), url_fetcher=no_fetch).write_pdf()
