// graphnet.viz.Widget's front end (anywidget); scene.js is prepended to this module.
// Hover a node: its tooltip. Click it: histograms of its value and gradient. The slider
// (or the arrow keys once the widget has focus) walks the forward and backward steps;
// the wheel zooms, dragging pans, 0 or Fit fits. Live updates restyle the same layout.

function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function histogramSvg(h, color) {
  var w = 260, ht = 70, n = h.counts.length;
  var top = Math.max.apply(null, h.counts.concat([1]));
  var bars = h.counts.map(function (c, i) {
    var bh = (ht - 4) * c / top;
    return '<rect x="' + (i * w / n).toFixed(1) + '" y="' + (ht - bh).toFixed(1) +
      '" width="' + Math.max(w / n - 1, 1).toFixed(1) + '" height="' + bh.toFixed(1) +
      '" fill="' + color + '"></rect>';
  }).join("");
  var ends = h.edges.length ? [h.edges[0], h.edges[h.edges.length - 1]] : ["", ""];
  var label = function (x, anchor, value) {
    return '<text x="' + x + '" y="' + (ht + 12) + '" font-size="10" text-anchor="' +
      anchor + '">' + (value === "" ? "" : value.toPrecision(3)) + "</text>";
  };
  return '<svg width="' + w + '" height="' + (ht + 14) + '" class="gn-hist">' + bars +
    label(0, "start", ends[0]) + label(w, "end", ends[1]) + "</svg>";
}

function render({ model, el: root }) {
  root.classList.add("gn-widget");
  root.tabIndex = 0;
  var bar = el("div", "gn-bar");
  var prev = el("button", "gn-prev", "◀");
  var slider = el("input", "gn-slider");
  slider.type = "range";
  slider.min = 0;
  var next = el("button", "gn-next", "▶");
  var counter = el("span", "gn-counter");
  var fit = el("button", "gn-fit", "Fit");
  var status = el("span", "gn-status");
  [prev, slider, next, counter, fit, status].forEach(function (e) { bar.appendChild(e); });
  var text = el("pre", "gn-text");
  var body = el("div", "gn-body");
  var stage = el("div", "gn-stage");
  var panel = el("div", "gn-panel");
  panel.appendChild(el("div", "gn-hint", "click a node: histograms of its value and gradient"));
  body.appendChild(stage);
  body.appendChild(panel);
  var tooltip = el("pre", "gn-tooltip");
  tooltip.style.display = "none";
  [bar, text, body, tooltip].forEach(function (e) { root.appendChild(e); });

  var scene = null;

  function show(i) {
    var frames = model.get("frames");
    i = Math.max(0, Math.min(frames.length - 1, i));
    scene.show(i);
    slider.value = i;
    counter.textContent = frames.length > 1 ? "step " + (i + 1) + " / " + frames.length : "";
    text.textContent = model.get("texts")[i] || "";
    var active = model.get("active")[i] || "";
    stage.dataset.step = String(i + 1);
    stage.dataset.active = active;
    if (active) scene.reveal(active);
  }
  function go(i) {
    model.set("step", i);
    model.save_changes();
  }
  // Laying the scene out measures the SVG: wait until the widget is on the page.
  function whenShown(fn) {
    if (root.isConnected && stage.getBoundingClientRect().width > 0) fn();
    else requestAnimationFrame(function () { whenShown(fn); });
  }
  function rebuild() { whenShown(build); }
  function build() {
    var frames = model.get("frames");
    if (!model.get("svg")) return;
    scene = createScene(stage, model.get("svg"), frames);
    // the widget draws its own tooltip: drop the SVG's, so the two do not overlap
    scene.svg.querySelectorAll("title").forEach(function (t) { t.remove(); });
    scene.svg.querySelectorAll("a").forEach(function (a) {
      a.removeAttribute("xlink:title");
    });
    slider.max = frames.length - 1;
    [prev, slider, next].forEach(function (e) {
      e.style.display = frames.length > 1 ? "" : "none";
    });
    scene.start();
    show(model.get("step"));
    var live = model.get("live_state");
    if (live.patch) scene.patch(live.patch);
  }
  function nodeOf(target) {
    var g = target.closest ? target.closest("g.node") : null;
    return g && g.id && g.id.indexOf("n_") === 0 ? g : null;
  }
  function showHistograms(msg) {
    panel.innerHTML = "";
    panel.appendChild(el("div", "gn-hist-title", msg.name));
    [["value", "#0072B2"], ["grad", "#D55E00"]].forEach(function (pair) {
      var h = msg[pair[0]];
      if (!h) return;
      var left = h.nonfinite ? " (" + h.nonfinite + " NaN/Inf left out)" : "";
      panel.appendChild(el("div", "gn-hist-label", pair[0] + left));
      var holder = el("div");
      holder.innerHTML = histogramSvg(h, pair[1]);
      panel.appendChild(holder);
      panel.appendChild(el("div", "gn-hist-summary", h.summary));
    });
    panel.dataset.node = msg.node;
  }

  stage.addEventListener("mousemove", function (e) {
    var g = nodeOf(e.target);
    if (!g || !scene) { tooltip.style.display = "none"; return; }
    tooltip.textContent = scene.tip(g.id);
    tooltip.style.display = "block";
    var r = root.getBoundingClientRect();
    tooltip.style.left = (e.clientX - r.left + 14) + "px";
    tooltip.style.top = (e.clientY - r.top + 14) + "px";
  });
  stage.addEventListener("mouseleave", function () { tooltip.style.display = "none"; });
  stage.addEventListener("click", function (e) {
    if (stage.dataset.dragged) { delete stage.dataset.dragged; return; }
    var g = nodeOf(e.target);
    if (!g) return;
    model.set("selected", g.id);
    model.save_changes();
    model.send({ type: "histogram", node: g.id, step: Number(slider.value) });
  });
  model.on("msg:custom", function (msg) { if (msg.type === "histogram") showHistograms(msg); });
  slider.addEventListener("input", function () { go(Number(slider.value)); });
  prev.addEventListener("click", function () { go(Number(slider.value) - 1); });
  next.addEventListener("click", function () { go(Number(slider.value) + 1); });
  fit.addEventListener("click", function () { if (scene) scene.fit(); });
  root.addEventListener("keydown", function (e) {
    if (!scene) return;
    var i = Number(slider.value);
    var keys = {
      ArrowLeft: function () { go(i - 1); }, ArrowRight: function () { go(i + 1); },
      Home: function () { go(0); }, End: function () { go(model.get("frames").length - 1); },
      "+": function () { scene.zoomBy(1.25); }, "=": function () { scene.zoomBy(1.25); },
      "-": function () { scene.zoomBy(0.8); }, "0": function () { scene.fit(); },
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });
  model.on("change:svg", rebuild);
  model.on("change:step", function () { if (scene) show(model.get("step")); });
  model.on("change:status", function () { status.textContent = model.get("status"); });
  model.on("change:live_state", function () {
    var live = model.get("live_state");
    if (!scene || !live.patch) return;
    // a live update is the graph's own state: the slider's last position
    var last = model.get("frames").length - 1;
    if (Number(slider.value) !== last) show(last);
    scene.patch(live.patch);
    stage.dataset.iteration = String(live.iteration);
    if (live.histograms) showHistograms(live.histograms);
  });
  status.textContent = model.get("status");
  rebuild();
}

export default { render };
