"""A real browser: every notebook in JupyterLab, in headless Chromium, with every non-loopback request blocked.

Starts ``jupyter lab`` once on 127.0.0.1 (random free port, a token, the ci preset, one empty artifacts folder
that the notebooks share, as a learner's do), serving copies of the notebooks. For each notebook a test opens
it, runs all cells from the Run menu as a learner would, checks that no cell raised, and then drives one
control of its "try it" panel the way a learner does (a slider's readout, a text box, a dropdown, a
button) and checks what the panel shows: 00 and 03 open at BERT-base's 30522 / 109,482,240 and refuse a
head count that does not divide the width; 01 tokenizes typed text; 02 caps a long text and explains
characters no font has; 04 refuses a seed out of range and recovers; 05 says when settings wait for the
button, refuses an impossible model and clears its runs; 06 classifies a typed review; 07 draws every
bertviz view with the bundled libraries (so nothing came from the network: the browser may reach only
127.0.0.1) and its explorer answers a change of head and of model. Screenshots go to
``build/test-artifacts/screenshots/``.

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
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bertbook import attention_maps, views
from bertbook.config import get_preset
from bertbook.paths import project_root

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("BERTBOOK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOKS = project_root() / "notebooks"
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
    data = attention_maps.AttentionData(tokens=tokens, attentions=a, sentence_b_start=5,
                                        queries=torch.randn(2, 3, 8, 4), keys=torch.randn(2, 3, 8, 4), name="random")
    page_path = views.save_html([views.head_view(data), views.model_view(data), views.neuron_view(data),
                                 views.head_view(data, layer=1)], tmp_path / "views.html")
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


# ------------------------------------------------------------------------------- the notebooks in JupyterLab


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving copies of the notebooks; yields (url, token)."""
    _require_browser()  # skip before starting a server nobody will look at
    pytest.importorskip("jupyterlab", reason="JupyterLab (the lab extra) is needed")
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    root = tmp_path / "lab"
    root.mkdir()
    for notebook in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        shutil.copy(notebook, root / notebook.name)
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


def _shutdown_kernels(url: str, token: str) -> None:
    """Stop every kernel of the server, so the next notebook has the machine to itself."""
    kernels = json.load(urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=10))
    for kernel in kernels:
        request = urllib.request.Request(f"{url}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(request, timeout=30)


@contextmanager
def run_in_jupyterlab(lab, name: str, run_seconds: float = 300):
    """Open notebook ``name`` in JupyterLab, clear it, Run > Run All Cells as a learner would, and wait until
    every cell ran; yields the page. Fails if a cell raised, the page had a script error or the page tried to
    reach the network."""
    sync_api = _require_browser()
    url, token = lab
    firewall = Firewall()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            firewall.install(context)
            page = context.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            # A workspace of its own, reset: no tab of an earlier test's notebook (whose kernel is gone) comes back.
            page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={token}")

            # The notebook is open and its kernel is ready.
            page.wait_for_function("() => { const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                                   " return p && p.sessionContext && p.sessionContext.session &&"
                                   " p.sessionContext.session.kernel &&"
                                   " p.sessionContext.session.kernel.status === 'idle'; }", timeout=90000)

            # Start from a clean slate (no stored outputs or execution counts), then Run > Run All Cells.
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
            page.wait_for_function("() => window.jupyterapp.shell.currentWidget.content.widgets"
                                   ".every(c => c.model.type !== 'code' || c.model.executionCount === null)")
            page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            page.wait_for_function("() => document.querySelectorAll('.jp-InputArea-prompt').length > 0 && "
                                   "Array.from(document.querySelectorAll('.jp-InputArea-prompt'))"
                                   ".some(p => p.textContent.includes('*'))", timeout=30000)
            deadline = time.time() + run_seconds
            while True:
                state = page.evaluate(NOTEBOOK_STATE)
                if state["errors"]:
                    break
                if state["done"] == state["cells"] and state["busy"] == 0 and state["kernel"] == "idle":
                    break
                assert time.time() < deadline, f"{name} did not finish in {run_seconds} s: {state}"
                page.wait_for_timeout(1000)
            assert state["errors"] == [], f"cells of {name} raised: {state['errors']}"
            print(f"{name} ran in JupyterLab in {time.time() - t0:.0f} s")
            yield page
            page.screenshot(path=str(SCREENSHOTS / f"jupyterlab_{Path(name).stem}.png"), full_page=True)
            browser.close()
    finally:
        _shutdown_kernels(url, token)
    assert firewall.blocked == [], f"the page tried to reach the network: {firewall.blocked[:5]}"
    assert page_errors == [], page_errors


def code_cell(page, source: str):
    """The code cell whose source contains ``source`` (exactly one)."""
    cell = page.locator(".jp-CodeCell", has=page.locator(".jp-InputArea", has_text=source))
    assert cell.count() == 1, f"{cell.count()} cells contain {source!r}"
    cell.scroll_into_view_if_needed()
    return cell


def slider(cell, label: str):
    return cell.locator(".widget-slider", has=cell.page.locator(f"label:text-is('{label}')"))


def set_slider(cell, label: str, value: int) -> None:
    """Type a value into a slider's readout and press Enter, as a learner can instead of dragging."""
    readout = slider(cell, label).locator(".widget-readout")
    readout.click()
    cell.page.keyboard.press("Control+A")
    cell.page.keyboard.type(str(value))
    cell.page.keyboard.press("Enter")


def wait_text(locator, text: str, timeout: float = 60000) -> None:
    """Wait until the element's text contains ``text``."""
    locator.first.wait_for(timeout=timeout)
    handle = locator.first.element_handle()
    locator.page.wait_for_function("([el, text]) => el.innerText.includes(text)", arg=[handle, text],
                                   timeout=timeout)


def test_notebook_00_size_panel(jupyterlab):
    with run_in_jupyterlab(jupyterlab, "00_setup_and_ssl.ipynb", run_seconds=120) as page:
        cell = code_cell(page, "panel = size_panel()")
        report = cell.locator(".bertbook-size-report")
        wait_text(report, "parameters")
        page.wait_for_timeout(1500)  # a slider that snapped to its step would have told the kernel by now
        assert slider(cell, "vocab").locator(".widget-readout").inner_text() == "30522"
        assert "vocab=30522: 109,482,240 parameters" in report.inner_text()
        set_slider(cell, "heads A", 13)
        wait_text(report, "not a valid model")
        assert "is not divisible by model.num_attention_heads=13" in report.inner_text()
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_00_size_panel.png"))


def test_notebook_01_tokenizer_explorer(jupyterlab):
    with run_in_jupyterlab(jupyterlab, "01_tokenization.ipynb", run_seconds=180) as page:
        cell = code_cell(page, 'explorer({"ours": tok, "MiniLM": minilm_tok}')
        table = cell.locator(".jp-OutputArea-output table")
        wait_text(table, "tokens")
        cell.locator("textarea").fill("unaffable \U0001F600")
        wait_text(table, "[[UNK]]")
        rows = table.inner_text()
        assert rows.count("[[UNK]]") == 2 and rows.count(" 1 unknown") == 2, rows  # both tokenizers
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_01_tokenizer_explorer.png"))


def test_notebook_02_attention_explorer(jupyterlab):
    from bertbook.viz import readable_labels

    with run_in_jupyterlab(jupyterlab, "02_attention.ipynb", run_seconds=240) as page:
        cell = code_cell(page, "widgets.interact(\n    show,")
        output = cell.locator(".widget-interact .widget-output")
        output.locator("img").first.wait_for(timeout=60000)
        box = cell.locator(".widget-text", has=page.locator("label:text-is('sentence')")).locator("input")
        box.fill(" ".join(["The cat sat on the mat because it was tired."] * 8))
        wait_text(output, "the heatmap shows 40: [CLS], the first 38 word pieces and [SEP]")
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_02_long_text.png"))
        box.fill("我喜欢我的猫。")
        no_font = readable_labels(["我"])[1]  # "" when this machine has a font with Chinese glyphs
        if no_font:
            wait_text(output, "No font installed here has the characters")
        else:
            page.wait_for_function("(el) => !el.innerText.includes('The text has')",
                                   arg=output.first.element_handle(), timeout=60000)
        assert output.locator("img").count() == 1
        assert "Glyph" not in output.inner_text() and "missing from" not in output.inner_text()
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_02_chinese.png"))


def test_notebook_03_size_panel(jupyterlab):
    with run_in_jupyterlab(jupyterlab, "03_encoder.ipynb", run_seconds=240) as page:
        cell = code_cell(page, "widgets.interact(\n    size_report,")
        output = cell.locator(".widget-interact .widget-output")
        output.locator("img").first.wait_for(timeout=60000)
        page.wait_for_timeout(1500)  # a slider that snapped to its step would have told the kernel by now
        assert slider(cell, "vocab").locator(".widget-readout").inner_text() == "30522"
        set_slider(cell, "heads", 13)
        wait_text(output, "is not divisible by model.num_attention_heads=13")
        assert output.locator("img").count() == 0
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_03_size_panel.png"))


def test_notebook_04_mask_widget(jupyterlab):
    with run_in_jupyterlab(jupyterlab, "04_masking.ipynb", run_seconds=240) as page:
        cell = code_cell(page, "widgets.mask_widget(tok, SENTENCE)")
        panel = cell.locator(".bertbook-mask-widget")
        wait_text(panel, "tokens chosen")
        seed = panel.locator(".widget-text", has=page.locator("label:text-is('seed')")).locator("input")
        for bad in ("-5", "99999999999999999999"):
            seed.fill(bad)
            seed.press("Enter")
            wait_text(panel, "The seed must be a whole number from 0 to 4,294,967,295")
            assert "tokens chosen" not in panel.inner_text() and "Overflow" not in panel.inner_text()
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_04_bad_seed.png"))
        seed.fill("7")
        seed.press("Enter")
        wait_text(panel, "tokens chosen")
        assert "The seed must be" not in panel.inner_text()


def test_notebook_05_experiment_panel(jupyterlab):
    with run_in_jupyterlab(jupyterlab, "05_pretraining.ipynb", run_seconds=480) as page:
        cell = code_cell(page, "widgets.experiment_panel(P, runs)")
        status, plot = cell.locator(".bertbook-experiment-status"), cell.locator(".bertbook-experiment-plot")
        plot.locator("img").first.wait_for(timeout=60000)  # the two runs of the cell above
        cell.locator(".widget-dropdown", has=page.locator("label:text-is('sentence obj.')")).locator(
            "select").select_option("sop")
        wait_text(status, "Settings changed")
        set_slider(cell, "heads", 3)  # the ci preset's width is 64: 3 heads do not divide it
        cell.locator("button", has_text="run experiment").click()
        wait_text(status, "Cannot run this experiment")
        assert "not divisible" in status.inner_text() and plot.locator("img").count() == 1
        cell.locator("button", has_text="clear runs").click()
        wait_text(status, "No runs yet")
        page.wait_for_function("(el) => el.querySelectorAll('img').length === 0", arg=plot.first.element_handle(),
                               timeout=20000)  # the old plot is gone, not left on screen
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_05_experiment_panel.png"))


def test_notebook_06_try_it(jupyterlab):
    with run_in_jupyterlab(jupyterlab, "06_finetuning.ipynb", run_seconds=900) as page:
        cell = code_cell(page, "widgets.try_it(ours.model, ours.tokenizer, ours.info)")
        result = cell.locator(".widget-html").last
        wait_text(result, "with probability")
        cell.locator("textarea").fill("An awful, boring and pointless film.")
        cell.locator("button", has_text="classify").click()
        wait_text(result, "pointless")
        assert "with probability" in result.inner_text()
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_06_try_it.png"))


def test_notebook_07_in_jupyterlab(jupyterlab):
    with run_in_jupyterlab(jupyterlab, "07_looking_inside.ipynb", run_seconds=300) as page:
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


def test_notebook_08_entities_and_answers(jupyterlab):
    with run_in_jupyterlab(jupyterlab, "08_applications.ipynb", run_seconds=900) as page:
        cell = code_cell(page, "widgets.entity_highlighter(model, tok, info)")
        result = cell.locator(".widget-html").last
        cell.locator("textarea").fill("   ")
        cell.locator("button", has_text="find entities").click()
        wait_text(result, "empty")  # a message, not a traceback
        cell = code_cell(page, "widgets.answer_finder(model, tok, info, paragraph")
        result = cell.locator(".widget-html").last
        wait_text(result, "score")
        cell.locator("input[type=text]").fill("When did the Normans give their name to Normandy?")
        cell.locator("button", has_text="answer").click()
        wait_text(result, "window(s)")
        assert result.locator("span").count() >= 1  # the answer highlighted in the paragraph
        cell.screenshot(path=str(SCREENSHOTS / "jupyterlab_08_answer.png"))
