"""A real browser: notebook 07 in JupyterLab, in headless Chromium, with every non-loopback request blocked.

Starts ``jupyter lab`` on 127.0.0.1 (random free port, a token, the ci preset, an empty artifacts folder),
opens a copy of notebook 07, runs all cells from the Run menu and checks that the cells ran without errors,
that every bertviz view drew its SVG with the bundled libraries (so nothing came from the network: the
browser may reach only 127.0.0.1), and that the attention explorer renders and responds to a change.
Screenshots go to ``build/test-artifacts/screenshots/``.

Needs Debian's chromium (``apt-get install -y chromium``; ``BERTBOOK_CHROMIUM`` points elsewhere) and the
``playwright`` package, launched with that executable (no browser download). Skipped when chromium is absent.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bertbook import viz
from bertbook.config import get_preset
from bertbook.paths import project_root

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("BERTBOOK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOK = project_root() / "notebooks" / "07_looking_inside.ipynb"
SCREENSHOTS = project_root() / "build" / "test-artifacts" / "screenshots"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _require_browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium): "
                    f"the browser tests need it.")
    return pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) is needed")


class Firewall:
    """Lets the page reach loopback addresses and files only; records and aborts everything else."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def allowed(self, url: str) -> bool:
        parsed = urlparse(url)
        return parsed.scheme in ("file", "data", "blob") or parsed.hostname in LOOPBACK

    def install(self, context) -> None:
        def handle(route):
            self.blocked.append(route.request.url)
            route.abort()

        context.route(lambda url: not self.allowed(url), handle)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _views_drawn(page) -> list[dict]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('.bertbook-view')).map(v => ({
        id: v.id, svg: v.querySelectorAll('svg').length, marks: v.querySelectorAll('svg *').length}))""")


# ------------------------------------------------------------------------ a saved page, opened as a file


def test_saved_views_render_offline(tmp_path):
    sync_api = _require_browser()
    import torch

    tokens = ["[CLS]", "the", "cat", "sat", "[SEP]", "it", "purred", "[SEP]"]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 8, 8, generator=g).softmax(-1)  # (L, H, T, T)
    data = viz.AttentionData(tokens=tokens, attentions=a, sentence_b_start=5, queries=torch.randn(2, 3, 8, 4),
                             keys=torch.randn(2, 3, 8, 4), name="random")
    page_path = viz.save_html([viz.head_view(data), viz.model_view(data), viz.neuron_view(data),
                               viz.head_view(data, layer=1)], tmp_path / "views.html")
    firewall = Firewall()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        firewall.install(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        page.wait_for_function("() => document.querySelectorAll('.bertbook-view svg').length >= 4", timeout=15000)
        drawn = _views_drawn(page)
        versions = page.evaluate("() => window.bertbookViz.versions")
        globals_ = page.evaluate("() => [typeof window.jQuery, typeof window.$, typeof window.define, "
                                 "typeof window.d3]")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "saved_views.png"), full_page=True)
        browser.close()
    assert errors == []
    assert [v["svg"] for v in drawn] == [1, 1, 1, 1] and all(v["marks"] > 20 for v in drawn), drawn
    assert versions == {"d3": "5.7.0", "jquery": "3.7.1"}
    assert globals_ == ["undefined"] * 4  # the libraries stay inside window.bertbookViz
    assert firewall.blocked == []


# ------------------------------------------------------------------------------- notebook 07 in JupyterLab


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebook 07; yields (url, token)."""
    _require_browser()  # skip before starting a server nobody will look at
    pytest.importorskip("jupyterlab", reason="JupyterLab (the lab extra) is needed")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = tmp_path / "lab-settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    # Render every cell (no windowing), so that views far down the notebook are in the page.
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"}))
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel draws inline, as for a learner
    env.update(BERTBOOK_PRESET="ci", BERTBOOK_ARTIFACTS=str(tmp_path / "artifacts"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.port_retries=0",
         "--LabApp.extension_manager=readonly", *(["--allow-root"] if os.geteuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text())
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


NOTEBOOK_STATE = """() => {
    const panel = window.jupyterapp.shell.currentWidget;
    if (!panel || !panel.content || !panel.sessionContext) return null;
    const cells = panel.content.widgets.filter(c => c.model.type === 'code');
    const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
    const errors = [];
    for (const c of cells) {
        for (const o of c.model.outputs.toJSON()) {
            if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
        }
    }
    return {cells: cells.length, done: cells.filter(c => c.model.executionCount !== null).length,
            busy: cells.filter(c => { const p = c.node.querySelector('.jp-InputArea-prompt');
                                      return p && p.textContent.includes('*'); }).length,
            kernel: kernel ? kernel.status : 'none', errors};
}"""


def test_notebook_07_in_jupyterlab(jupyterlab):
    sync_api = _require_browser()
    url, token = jupyterlab
    firewall = Firewall()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        firewall.install(context)
        page = context.new_page()
        page_errors: list[str] = []
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")

        # The notebook is open and its kernel is ready.
        page.wait_for_function("() => { const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                               " return p && p.sessionContext && p.sessionContext.session &&"
                               " p.sessionContext.session.kernel &&"
                               " p.sessionContext.session.kernel.status === 'idle'; }", timeout=90000)

        # Start from a clean slate (no stored outputs or execution counts), then Run > Run All Cells, as a
        # learner would.
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
        page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.widgets"
                               ".every(c => c.model.type !== 'code' || c.model.executionCount === null)")
        page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        page.wait_for_function("() => document.querySelectorAll('.jp-InputArea-prompt').length > 0 && "
                               "Array.from(document.querySelectorAll('.jp-InputArea-prompt'))"
                               ".some(p => p.textContent.includes('*'))", timeout=30000)
        deadline = time.time() + 240
        while True:
            state = page.evaluate(NOTEBOOK_STATE)
            if state["errors"]:
                break
            if state["done"] == state["cells"] and state["busy"] == 0 and state["kernel"] == "idle":
                break
            assert time.time() < deadline, f"notebook 07 did not finish in time: {state}"
            page.wait_for_timeout(1000)
        run_seconds = time.time() - t0
        assert state["errors"] == [], f"cells raised: {state['errors']}"

        # Every bertviz view drew its SVG, with the bundled libraries.
        page.wait_for_function("() => Array.from(document.querySelectorAll('.bertbook-view'))"
                               ".every(v => v.querySelector('svg'))", timeout=20000)
        drawn = _views_drawn(page)
        assert len(drawn) == 6, drawn  # head x2, model x2, neuron x2
        assert all(v["svg"] == 1 and v["marks"] > 20 for v in drawn), drawn
        assert page.evaluate("() => window.bertbookViz.versions") == {"d3": "5.7.0", "jquery": "3.7.1"}
        for kind in ("head", "model", "neuron"):
            view = page.locator(f".bertbook-view[id^='bertviz-{kind}-']").first
            view.scroll_into_view_if_needed()
            view.screenshot(path=str(SCREENSHOTS / f"jupyterlab_{kind}_view.png"))

        # The explorer renders, and answers a change of head and of model.
        explorer = page.locator(".bertbook-attention-explorer")
        explorer.scroll_into_view_if_needed()
        summary = explorer.locator(".bertbook-explorer-summary")
        page.wait_for_function("() => { const s = document.querySelector('.bertbook-explorer-summary');"
                               " return s && s.textContent.includes('layer 0, head 0'); }", timeout=20000)
        assert explorer.locator(".jp-OutputArea-output img").count() == 1  # the heatmap
        image_before = explorer.locator(".jp-OutputArea-output img").get_attribute("src")
        explorer.screenshot(path=str(SCREENSHOTS / "jupyterlab_explorer_before.png"))

        def dropdown(label: str):
            return explorer.locator(".widget-dropdown", has=page.locator(f"label:text-is('{label}')")).locator(
                "select")

        dropdown("head").select_option(label="1")
        page.wait_for_function("() => document.querySelector('.bertbook-explorer-summary')"
                               ".textContent.includes('layer 0, head 1')", timeout=20000)
        page.wait_for_function("(before) => { const img = document.querySelector("
                               "'.bertbook-attention-explorer .jp-OutputArea-output img');"
                               " return img && img.getAttribute('src') !== before; }", arg=image_before,
                               timeout=20000)
        assert summary.inner_text().startswith("MiniLM, layer 0, head 1:")

        image_minilm = explorer.locator(".jp-OutputArea-output img").get_attribute("src")
        dropdown("model").select_option(label="ours (pretrained)")
        page.wait_for_function("() => document.querySelector('.bertbook-explorer-summary')"
                               ".textContent.startsWith('ours (pretrained), layer 0, head 1')", timeout=20000)
        page.wait_for_function("(before) => { const img = document.querySelector("
                               "'.bertbook-attention-explorer .jp-OutputArea-output img');"
                               " return img && img.getAttribute('src') !== before; }", arg=image_minilm,
                               timeout=20000)
        heads = get_preset("ci").model.num_attention_heads
        assert dropdown("head").locator("option").count() == heads
        explorer.screenshot(path=str(SCREENSHOTS / "jupyterlab_explorer_after.png"))
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab_notebook_07.png"))
        browser.close()

    assert firewall.blocked == [], f"the page tried to reach the network: {firewall.blocked[:5]}"
    assert page_errors == [], page_errors
    print(f"notebook 07 ran in JupyterLab in {run_seconds:.0f} s")
