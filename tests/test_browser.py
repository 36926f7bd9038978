"""The real ComfyUI page in headless Chromium: every example loads with no missing node types and queues exactly its
API twin; the SD1.5 pipeline queued from the page fills the loss chart and shows the sweep. Screenshots land in
test-artifacts/.
"""
from __future__ import annotations

import json

import pytest
from harness.browser import Chromium, chromium_path
from harness.datasets import make_sample_dataset, stock_server_base
from harness.runtime import REPO_ROOT
from harness.server import PACK_LINK_NAME, ComfyServer

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(chromium_path() is None,
                       reason="chromium is not installed (Debian: apt-get install chromium); the browser test needs it"),
]

EXAMPLES = sorted(path.stem for path in (REPO_ROOT / "example_workflows" / "api").glob("*.json"))
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"  # the example's name, holding the random test model
APP = "window.comfyAPI.app.app"
TINY = {"Load Dataset": {"repeats": 1}, "Auto Caption": {"max_tags": 8},
        "Train LoRA": {"epochs": 1, "rank": 4, "resolution": 64, "mixed_precision": "fp32", "text_encoder_lr": 0},
        "Strength Sweep": {"width": 64, "height": 64, "steps": 1, "strengths": "1", "seeds": "1",
                           "prompts": "ohwx, a red circle"}}
IMAGES = 1  # one epoch of one image, batch 1: one training step


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = stock_server_base(tmp_path_factory.mktemp("browser"), CHECKPOINT)
    make_sample_dataset(base / "input" / "lora_dataset", count=IMAGES, size=64, repeats=1, with_captions=False)
    with ComfyServer(base) as running:
        # A first visit opens the template dialog over the canvas; a returning user's settings do not.
        running.post_json("/settings/Comfy.TutorialCompleted", True)
        running.post_json("/settings/Comfy.Minimap.Visible", False)
        running.post_json("/settings/LoraLab.GpuHourPrice", 2.5)  # the run's cost estimate shows with a price set
        yield running


@pytest.fixture(scope="module")
def page(server):
    with Chromium(1600, 1000) as browser:
        tab = browser.page()
        tab.navigate(server.url)
        # Start-up ends by loading the default graph (after the extensions' setup): loading ours earlier races it.
        tab.wait_for(f"!!window.LiteGraph?.registered_node_types?.LoraLabTrainLoRA && "
                     f"{APP.replace('.app.app', '?.app?.app')}?.graph?._nodes?.length > 0", 120,
                     "the ComfyUI page with LoRA Lab and its default graph")
        yield tab
        ours = [text for text in tab.exceptions + tab.console if "loralab" in text.lower() and "error" in text.lower()]
        assert not ours, f"LoRA Lab's extension raised in the browser: {ours}"


def load_template(page, name: str) -> list[str]:
    """Load a template as the template browser does; returns the node types the page does not know."""
    return page.evaluate(f"""(async () => {{
        const response = await fetch("/api/workflow_templates/{PACK_LINK_NAME}/{name}.json");
        const workflow = await response.json();
        await {APP}.loadGraphData(workflow, true, true, "{name}");
        return workflow.nodes.map(n => n.type).filter(t => !LiteGraph.registered_node_types[t]);
    }})()""")


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_loads_with_every_node_known_and_queues_its_api_twin(page, name):
    assert load_template(page, name) == []
    queued = page.evaluate(f"{APP}.graphToPrompt().then(result => result.output)")
    assert queued == json.loads((REPO_ROOT / "example_workflows" / "api" / f"{name}.json").read_text())
    widgets = page.evaluate(f"""(() => {{
        const graph = {APP}.graph;
        const names = type => graph.findNodesByType(type).flatMap(n => n.widgets.map(w => w.name));
        return {{train: names("LoraLabTrainLoRA"), dataset: names("LoraLabLoadDataset")}};
    }})()""")
    assert "loralab_chart" in widgets["train"] and "loralab_report" in widgets["dataset"]


def test_queued_pipeline_draws_the_loss_chart_and_shows_the_sweep(page, server, artifacts_dir):
    assert load_template(page, "loralab_sd15_pipeline") == []
    result = page.evaluate(f"""(async () => {{
        const app = {APP}, graph = app.graph, tiny = {json.dumps(TINY)};
        for (const [title, values] of Object.entries(tiny)) {{
            const node = graph._nodes.find(n => n.title === title);
            if (!node) throw new Error(`no node titled ${{title}}: ${{graph._nodes.map(n => n.title)}}`);
            for (const [name, value] of Object.entries(values)) node.widgets.find(w => w.name === name).value = value;
        }}
        window.__loralabEnd = null;
        for (const kind of ["execution_success", "execution_error", "execution_interrupted"])
            window.comfyAPI.api.api.addEventListener(kind, e => {{ window.__loralabEnd = {{kind, detail: e.detail}}; }});
        await app.queuePrompt(0, 1);
        return true;
    }})()""")
    assert result
    end = page.wait_for("window.__loralabEnd", 900, "the end of the queued pipeline")
    assert end["kind"] == "execution_success", (end, server.log_tail())

    chart = page.evaluate(f"""(() => {{
        const train = {APP}.graph.findNodesByType("LoraLabTrainLoRA")[0];
        const box = train.widgets.find(w => w.name === "loralab_chart").element;
        return {{points: box.querySelector("canvas").dataset.points, status: box.querySelector(".loralab-status").textContent,
                 summary: box.querySelector(".loralab-summary").textContent}};
    }})()""")
    assert chart["points"] == str(IMAGES)
    assert f"step {IMAGES}/{IMAGES}" in chart["status"] and "epoch 1/1" in chart["status"]
    assert "est. cost" in chart["status"]
    assert "recommended epoch" in chart["summary"]

    sweep = page.wait_for(f"""(() => {{
        const node = {APP}.graph.findNodesByType("LoraLabStrengthSweep")[0];
        const images = {APP}.nodeOutputs[String(node.id)]?.images ?? [];
        return (node.imgs ?? []).filter(img => img.complete && img.naturalWidth > 0).length > 0 && images.length;
    }})()""", 60, "the sweep preview on Strength Sweep")
    assert sweep >= 1

    report = page.evaluate(f"""(() => {{
        const node = {APP}.graph.findNodesByType("LoraLabLoadDataset")[0];
        const rows = [...node.widgets.find(w => w.name === "loralab_report").element.children];
        return rows.map(row => [row.textContent, row.style.color]);
    }})()""")
    assert any("image" in text for text, _ in report)
    warnings = [colour for text, colour in report if text.startswith("WARNING:")]
    assert warnings and all(warnings), report  # a one-image dataset is warned about, in colour

    page.evaluate(f"""(() => {{
        const app = {APP}, train = app.graph.findNodesByType("LoraLabTrainLoRA")[0];
        app.canvas.ds.scale = 0.8;
        app.canvas.ds.offset = [-train.pos[0] + 500, -train.pos[1] + 150];
        app.graph.setDirtyCanvas(true, true);
        app.canvas.draw(true, true);
    }})()""")
    page.wait_for("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))", 10, "a frame")
    page.screenshot(artifacts_dir / "browser_sd15_pipeline.png")
