// The signature pad: strokes on a canvas, sent as a PNG data URL in the form's "drawn" field.
(function () {
  "use strict";
  var pad = document.getElementById("pad");
  var drawn = document.getElementById("drawn");
  var form = document.getElementById("sign-form");
  if (!pad || !form) { return; }
  var ctx = pad.getContext("2d");
  var drawing = false;
  var used = false;
  ctx.lineWidth = 3;
  ctx.lineCap = "round";
  ctx.strokeStyle = "#102a43";
  function point(event) {
    var rect = pad.getBoundingClientRect();
    return [(event.clientX - rect.left) * pad.width / rect.width, (event.clientY - rect.top) * pad.height / rect.height];
  }
  pad.addEventListener("pointerdown", function (event) {
    drawing = true; used = true;
    pad.setPointerCapture(event.pointerId);
    var p = point(event);
    ctx.beginPath(); ctx.moveTo(p[0], p[1]);
  });
  pad.addEventListener("pointermove", function (event) {
    if (!drawing) { return; }
    var p = point(event);
    ctx.lineTo(p[0], p[1]); ctx.stroke();
  });
  function stop() { drawing = false; }
  pad.addEventListener("pointerup", stop);
  pad.addEventListener("pointercancel", stop);  // a touch taken over by the browser (scrolling, a call)
  document.getElementById("clear").addEventListener("click", function () {
    ctx.clearRect(0, 0, pad.width, pad.height); used = false;
  });
  form.addEventListener("submit", function () {
    drawn.value = used ? pad.toDataURL("image/png") : "";
    // Signing takes the token a few seconds: a second tap would only be refused, so say it is under way.
    var button = document.getElementById("sign-button");
    button.disabled = true;
    button.textContent = "Signing…";
  });
}());
