// LoRA Lab frontend: a live loss chart and run figures on Train LoRA, a readable report on Load Dataset.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const TRAIN_NODE = "LoraLabTrainLoRA";
const DATASET_NODE = "LoraLabLoadDataset";
const COST_SETTING = "LoraLab.GpuHourPrice";

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
                   : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

function smooth(values, weight = 0.9) {
  let last = values[0] ?? 0;
  return values.map((v) => (last = last * weight + v * (1 - weight)));
}

function drawChart(chart) {
  const { canvas, steps, epochs } = chart;
  const g = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 24;
  g.clearRect(0, 0, W, H);
  g.fillStyle = "#1b1b1b"; g.fillRect(0, 0, W, H);
  if (!steps.length) {
    g.fillStyle = "#888"; g.font = "12px sans-serif"; g.textAlign = "center";
    g.fillText("training loss appears here once the run starts", W / 2, H / 2);
    g.textAlign = "start";
    return;
  }
  const losses = steps.map((p) => p.loss);
  const validation = epochs.filter((e) => e.validation_loss != null);
  const all = losses.concat(validation.map((e) => e.validation_loss));
  const lo = Math.min(...all), hi = Math.max(...all), span = hi - lo || 1;
  const total = chart.totalSteps || steps[steps.length - 1].step;
  const x = (step) => pad + (step / Math.max(1, total)) * (W - 2 * pad);
  const y = (v) => H - pad - ((v - lo) / span) * (H - 2 * pad);
  const line = (points, colour, width) => {
    g.strokeStyle = colour; g.lineWidth = width; g.beginPath();
    points.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
    g.stroke();
  };
  line(steps.map((p) => [x(p.step), y(p.loss)]), "#555", 1);
  line(smooth(losses).map((v, i) => [x(steps[i].step), y(v)]), "#4fc3f7", 2);
  if (validation.length) {
    line(validation.map((e) => [x(e.step), y(e.validation_loss)]), "#ffb74d", 2);
    g.fillStyle = "#ffb74d";
    validation.forEach((e) => g.fillRect(x(e.step) - 2, y(e.validation_loss) - 2, 4, 4));
  }
  g.fillStyle = "#ccc"; g.font = "11px sans-serif";
  g.fillText(`loss ${hi.toFixed(3)}`, 4, 12); g.fillText(lo.toFixed(3), 4, H - 6);
  g.fillStyle = "#4fc3f7"; g.fillText("train (smoothed)", W - 170, 12);
  g.fillStyle = "#ffb74d"; g.fillText("validation", W - 70, 12);
}

function describeRun(chart) {
  const last = chart.steps[chart.steps.length - 1];
  if (!last) return "waiting for the first step…";
  const price = Number(app.extensionManager?.setting?.get(COST_SETTING) ?? 0) || 0;
  const elapsed = (Date.now() - chart.startedAt) / 1000;
  const totalSeconds = elapsed + last.eta_s;
  const cost = price > 0 ? `  ·  est. cost ${(price * totalSeconds / 3600).toFixed(2)}` : "";
  return `epoch ${last.epoch}/${last.epochs}  ·  step ${last.step}/${last.total_steps}  ·  ` +
         `${last.it_s.toFixed(2)} it/s  ·  ETA ${formatDuration(last.eta_s)}${cost}`;
}

function addTrainingWidgets(node) {
  const box = document.createElement("div");
  box.style.cssText = "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;color:#ddd";
  const canvas = Object.assign(document.createElement("canvas"), { width: 360, height: 140 });
  canvas.style.cssText = "width:100%;border-radius:4px";
  const status = document.createElement("div");
  status.className = "loralab-status";
  status.textContent = "no training yet";
  const summary = document.createElement("pre");
  summary.className = "loralab-summary";
  summary.style.cssText = "margin:0;max-height:90px;overflow:auto;white-space:pre-wrap;font:11px monospace;color:#aaa";
  box.append(canvas, status, summary);
  const widget = node.addDOMWidget("loralab_chart", "loralab_chart", box, { serialize: false, getMinHeight: () => 190 });
  widget.serialize = false;
  // Kept on the node, not keyed by its id: a node gets its saved id only after nodeCreated, when a workflow loads.
  const chart = { canvas, status, steps: [], epochs: [], totalSteps: 0, startedAt: Date.now() };
  node.loralabChart = chart;
  drawChart(chart);
  const onExecuted = node.onExecuted;
  node.onExecuted = function (output) {
    onExecuted?.apply(this, arguments);
    summary.textContent = (output?.text ?? []).join("\n"); // the loss summary: final loss, recommended epoch
  };
}

function chartOf(nodeId) {
  const node = app.graph?.getNodeById(nodeId) ?? app.graph?.getNodeById(Number(nodeId));
  return node?.comfyClass === TRAIN_NODE ? node.loralabChart : undefined;
}

function addReportWidget(node) {
  const report = document.createElement("pre");
  report.className = "loralab-report";
  report.style.cssText = "margin:0;max-height:260px;overflow:auto;white-space:pre-wrap;font:11px monospace;color:#ccc";
  const widget = node.addDOMWidget("loralab_report", "loralab_report", report, { serialize: false, getMinHeight: () => 120 });
  widget.serialize = false;
  const onExecuted = node.onExecuted;
  node.onExecuted = function (output) {
    onExecuted?.apply(this, arguments);
    const text = (output?.text ?? []).join("\n");
    report.replaceChildren(...text.split("\n").map((line) => {
      const row = document.createElement("div");
      row.textContent = line;
      if (line.startsWith("WARNING:")) row.style.cssText = "color:#ffb74d;font-weight:bold";
      if (line.startsWith("NOTE:")) row.style.color = "#90caf9";
      return row;
    }));
  };
}

app.registerExtension({
  name: "LoraLab.Frontend",
  settings: [{ id: COST_SETTING, name: "LoRA Lab: GPU price per hour (for the run cost estimate)", type: "number", defaultValue: 0 }],
  async nodeCreated(node) {
    if (node.comfyClass === TRAIN_NODE) addTrainingWidgets(node);
    if (node.comfyClass === DATASET_NODE) addReportWidget(node);
  },
  async setup() {
    api.addEventListener("loralab.train", ({ detail }) => {
      const chart = chartOf(detail.node);
      if (!chart) return;
      if (detail.kind === "step") {
        if (detail.step === 1 || detail.step < (chart.steps.at(-1)?.step ?? 0)) {
          chart.steps = []; chart.epochs = []; chart.startedAt = Date.now();
        }
        chart.totalSteps = detail.total_steps;
        chart.steps.push(detail);
      } else if (detail.kind === "epoch") {
        chart.epochs.push({ ...detail, step: chart.steps.at(-1)?.step ?? 0 });
      }
      chart.status.textContent = describeRun(chart);
      chart.canvas.dataset.points = String(chart.steps.length);
      drawChart(chart);
      app.graph?.setDirtyCanvas(true);
    });
  },
});
