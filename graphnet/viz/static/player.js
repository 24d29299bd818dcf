// The HTML step player: buttons, keys and Play over one scene (scene.js comes first).
// Keys: left/right arrows step, Home/End jump, space plays or pauses, + and - zoom,
// 0 fits the drawing; the mouse wheel zooms and dragging pans.
(function () {
  var data = JSON.parse(document.getElementById("graphnet-data").textContent);
  var stage = document.getElementById("stage");
  var scene = createScene(stage, data.svg, data.frames);
  var counter = document.getElementById("counter");
  var text = document.getElementById("text");
  var play = document.getElementById("play");
  var current = 0, timer = null;

  function show(i) {
    current = Math.max(0, Math.min(data.frames.length - 1, i));
    scene.show(current);
    counter.textContent = "Step " + (current + 1) + " / " + data.frames.length;
    text.textContent = data.texts[current];
    stage.dataset.step = String(current + 1);
    stage.dataset.active = data.active[current];
    scene.reveal(data.active[current]);
  }
  function stop() { clearInterval(timer); timer = null; play.textContent = "Play"; }
  function toggle() {
    if (timer) { stop(); return; }
    if (current === data.frames.length - 1) show(0);
    play.textContent = "Pause";
    timer = setInterval(function () {
      show(current + 1);
      if (current >= data.frames.length - 1) stop();
    }, data.interval);
  }
  function step(i) { stop(); show(i); }
  document.getElementById("first").onclick = function () { step(0); };
  document.getElementById("prev").onclick = function () { step(current - 1); };
  document.getElementById("next").onclick = function () { step(current + 1); };
  document.getElementById("last").onclick = function () { step(data.frames.length - 1); };
  document.getElementById("fit").onclick = function () { scene.fit(); };
  play.onclick = toggle;
  document.addEventListener("keydown", function (e) {
    var keys = {
      ArrowLeft: function () { step(current - 1); },
      ArrowRight: function () { step(current + 1); },
      Home: function () { step(0); },
      End: function () { step(data.frames.length - 1); },
      " ": toggle,
      "+": function () { scene.zoomBy(1.25); },
      "=": function () { scene.zoomBy(1.25); },
      "-": function () { scene.zoomBy(0.8); },
      "0": function () { scene.fit(); },
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });
  scene.show(0);
  scene.start();
  show(0);
})();
