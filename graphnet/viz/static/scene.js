// graphnet scene: one SVG laid out once by Graphviz (in Python), patched state by state.
// Shared by the HTML step player and the notebook widget; no dependencies, no network.
//
// createScene(stage, svgText, frames) puts the SVG in `stage` and returns a controller:
//   show(i)        apply state i (frames[0] is complete, each later one what changed)
//   patch(p)       apply a complete patch that is not one of the frames (a live update)
//   fit()          the whole drawing in the stage; zoomBy(f), panBy(dx, dy) in pixels
//   reveal(id)     pan so that node `id` is inside the stage
//   tip(id)        the current tooltip text of node `id`
// The mouse wheel zooms around the pointer, dragging pans.

function mergeState(before, frame) {
  var state = { nodes: {}, edges: {} };
  ["nodes", "edges"].forEach(function (part) {
    var old = before ? before[part] : {};
    Object.keys(old).forEach(function (key) { state[part][key] = old[key]; });
    Object.keys(frame[part] || {}).forEach(function (key) {
      state[part][key] = Object.assign({}, old[key] || {}, frame[part][key]);
    });
  });
  return state;
}

function createScene(stage, svgText, frames) {
  stage.innerHTML = svgText;
  var svg = stage.querySelector("svg");
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  svg.style.width = "100%";
  svg.style.height = "100%";
  svg.style.display = "block";
  var box = svg.viewBox.baseVal;
  var full = [box.x, box.y, box.width, box.height];
  var view = full.slice();
  var states = [];
  frames.forEach(function (frame, i) { states.push(mergeState(states[i - 1], frame)); });
  var current = states.length ? states[0] : { nodes: {}, edges: {} };

  function element(id) { return svg.querySelector("#" + CSS.escape(id)); }

  // Graphviz starts each label row at the x where its widest text would start: centre
  // the rows instead, so a shorter text in a later state stays in the middle.
  Object.keys(current.nodes).forEach(function (id) {
    var g = element(id);
    if (!g) return;
    var shape = g.querySelector("polygon, path, ellipse");
    var b = shape.getBBox();
    g.querySelectorAll("text").forEach(function (t) {
      t.setAttribute("text-anchor", "middle");
      t.setAttribute("x", b.x + b.width / 2);
    });
  });

  function applyNode(id, n) {
    var g = element(id);
    if (!g) return;
    var texts = g.querySelectorAll("text");
    (n.rows || []).forEach(function (row, k) {
      var t = texts[k];
      if (!t) return;
      t.textContent = row[0];
      if (row[1]) t.setAttribute("fill", row[1]);
      t.setAttribute("font-weight", row[2] ? "bold" : "normal");
    });
    var shapes = g.querySelectorAll("polygon, path, ellipse, polyline");
    shapes.forEach(function (s, k) {
      if (k === 0 && n.fill) s.setAttribute("fill", n.fill);
      s.setAttribute("stroke", n.stroke || "#555555");
      s.setAttribute("stroke-width", n.pen || "1");
    });
    var anchor = g.querySelector("a");
    var title = anchor && anchor.getAttributeNode("xlink:title");
    if (title) title.value = n.tip || "";
  }

  function applyEdge(id, e) {
    var g = element(id);
    if (!g) return;
    var path = g.querySelector("path");
    path.setAttribute("stroke", e.color);
    path.setAttribute("stroke-width", e.pen);
    g.querySelectorAll("polygon").forEach(function (p) {
      p.setAttribute("fill", e.color);
      p.setAttribute("stroke", e.color);
      p.setAttribute("stroke-width", e.pen);
    });
    var label = g.querySelector("text");
    if (label) {
      label.textContent = e.label;
      label.setAttribute("font-weight", e.bold ? "bold" : "normal");
    }
    var underline = g.querySelector("polyline");  // the line from a label to its edge
    if (underline) underline.style.visibility = e.label ? "visible" : "hidden";
  }

  function apply(state) {
    current = state;
    Object.keys(state.nodes).forEach(function (id) { applyNode(id, state.nodes[id]); });
    Object.keys(state.edges).forEach(function (id) { applyEdge(id, state.edges[id]); });
  }

  // ----- pan and zoom: the viewBox is the camera -----
  function setView(v) {
    view = v;
    svg.setAttribute("viewBox", v.join(" "));
  }
  function unitsPerPixel() {
    var r = stage.getBoundingClientRect();
    return Math.max(view[2] / Math.max(r.width, 1), view[3] / Math.max(r.height, 1));
  }
  function toSvg(x, y) {
    var point = svg.createSVGPoint();
    point.x = x;
    point.y = y;
    return point.matrixTransform(svg.getScreenCTM().inverse());
  }
  function zoomBy(factor, x, y) {
    var r = stage.getBoundingClientRect();
    var c = toSvg(x === undefined ? r.left + r.width / 2 : x,
                  y === undefined ? r.top + r.height / 2 : y);
    setView([c.x - (c.x - view[0]) / factor, c.y - (c.y - view[1]) / factor,
             view[2] / factor, view[3] / factor]);
  }
  function panBy(dx, dy) {
    var s = unitsPerPixel();
    setView([view[0] - dx * s, view[1] - dy * s, view[2], view[3]]);
  }
  function fit() { setView(full.slice()); }
  function reveal(id) {
    var g = element(id);
    if (!g) return;
    var r = g.getBoundingClientRect(), s = stage.getBoundingClientRect();
    var inside = r.left >= s.left && r.right <= s.right && r.top >= s.top &&
      r.bottom <= s.bottom;
    if (inside) return;
    var c = toSvg(r.left + r.width / 2, r.top + r.height / 2);
    setView([c.x - view[2] / 2, c.y - view[3] / 2, view[2], view[3]]);
  }
  // Fit the drawing; a large one whose text would be too small to read is shown at 90 %
  // instead, starting from its top (reveal() then follows the active gate).
  function start() {
    fit();
    var r = stage.getBoundingClientRect();
    if (unitsPerPixel() > 1 / 0.6 && r.width > 0) {
      var w = r.width / 0.9, h = r.height / 0.9;
      setView([full[0] + Math.max((full[2] - w) / 2, 0), full[1], w, h]);
    }
  }

  stage.addEventListener("wheel", function (e) {
    e.preventDefault();
    zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX, e.clientY);
  }, { passive: false });
  var drag = null;
  stage.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, moved: false };
  });
  window.addEventListener("pointermove", function (e) {
    if (!drag) return;
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 3) return;
    drag.moved = true;
    stage.style.cursor = "grabbing";
    panBy(dx, dy);
    drag.x = e.clientX;
    drag.y = e.clientY;
  });
  window.addEventListener("pointerup", function () {
    stage.style.cursor = "";
    // a click that ended a drag is not a click on a node
    if (drag && drag.moved) stage.dataset.dragged = "1";
    drag = null;
  });

  return {
    svg: svg,
    count: states.length,
    show: function (i) { apply(states[i]); },
    patch: function (p) { apply(mergeState(current, p)); },
    fit: fit,
    start: start,
    zoomBy: zoomBy,
    panBy: panBy,
    reveal: reveal,
    tip: function (id) { return (current.nodes[id] || {}).tip || ""; },
    nodeIds: function () { return Object.keys(current.nodes); },
  };
}
