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
  pad.addEventListener("pointerup", function () { drawing = false; });
  document.getElementById("clear").addEventListener("click", function () {
    ctx.clearRect(0, 0, pad.width, pad.height); used = false;
  });
  form.addEventListener("submit", function () {
    drawn.value = used ? pad.toDataURL("image/png") : "";
  });
}());
