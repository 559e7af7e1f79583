// interlock UI: live updates over server-sent events, and the copy button. No framework, no build.
(function () {
  "use strict";
  var indicator = document.getElementById("live");
  var label = indicator && indicator.querySelector(".live-text");
  var session = document.body.getAttribute("data-session");
  var workflow = document.body.getAttribute("data-workflow");
  var pending = false;

  function refresh() {
    var target = document.querySelector("[data-live-fragment]");
    if (!target || pending) return;
    pending = true;
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url, { credentials: "same-origin", headers: { "accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) target.innerHTML = html; })
      .finally(function () { pending = false; });
  }

  function toast(text) {
    var el = document.createElement("div");
    el.className = "toast";
    el.setAttribute("role", "status");
    el.textContent = text;
    document.body.appendChild(el);
    setTimeout(function () { el.remove(); }, 2500);
  }

  if (window.EventSource && indicator) {
    var source = new EventSource("/live");
    source.onopen = function () { indicator.classList.add("on"); if (label) label.textContent = "live"; };
    source.onerror = function () { indicator.classList.remove("on"); if (label) label.textContent = "reconnecting"; };
    source.addEventListener("calls", function (event) {
      var calls = JSON.parse(event.data);
      indicator.classList.add("flash");
      setTimeout(function () { indicator.classList.remove("flash"); }, 600);
      var page = document.body.getAttribute("data-page");
      if (page === "sessions" || page === "calls") {
        refresh();
        toast(calls.length + " new call" + (calls.length > 1 ? "s" : "") + " recorded");
      } else if (page === "session" && calls.some(function (c) { return c.session === session; })) {
        refresh();
      } else if (page === "workflow" && calls.some(function (c) { return c.workflow === workflow; })) {
        refreshWorkflow();
      }
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    var done = function () {
      button.classList.add("done");
      var old = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.classList.remove("done"); button.textContent = old; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { select(source); });
    } else {
      select(source);
      try { document.execCommand("copy"); done(); } catch (e) { /* selected: the user can copy */ }
    }
  });

  // The workflow page: its lanes, handoffs and totals all change with a new call, so the page's
  // main part is fetched again and swapped in (no reload: scroll kept), then the arrows redrawn.
  function refreshWorkflow() {
    if (pending) return;
    pending = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        if (!fresh) return;
        document.querySelector("main").innerHTML = fresh.innerHTML;
        lanes = document.getElementById("lanes");
        if (lanes) drawHandoffs();
      })
      .finally(function () { pending = false; });
  }

  // The workflow page: an arrow from each handoff's source bar (its end) to its target bar (its start).
  var lanes = document.getElementById("lanes");
  function drawHandoffs() {
    var svg = lanes.querySelector("svg.handoff-arrows");
    var box = lanes.getBoundingClientRect();
    var ns = "http://www.w3.org/2000/svg";
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var marker = document.createElementNS(ns, "marker");
    marker.setAttribute("id", "arrow-head");
    marker.setAttribute("viewBox", "0 0 8 8");
    marker.setAttribute("refX", "7"); marker.setAttribute("refY", "4");
    marker.setAttribute("markerWidth", "7"); marker.setAttribute("markerHeight", "7");
    marker.setAttribute("orient", "auto-start-reverse");
    var head = document.createElementNS(ns, "path");
    head.setAttribute("d", "M0,0 L8,4 L0,8 z");
    head.setAttribute("style", "fill: var(--accent); stroke: none");
    marker.appendChild(head);
    var defs = document.createElementNS(ns, "defs");
    defs.appendChild(marker);
    svg.appendChild(defs);
    JSON.parse(lanes.getAttribute("data-handoffs") || "[]").forEach(function (h) {
      var from = lanes.querySelector('[data-call="' + h[0] + '"]');
      var to = lanes.querySelector('[data-call="' + h[1] + '"]');
      if (!from || !to) return;
      var a = from.getBoundingClientRect(), b = to.getBoundingClientRect();
      var x1 = a.right - box.left, y1 = a.top + a.height / 2 - box.top;
      var x2 = b.left - box.left, y2 = b.top + b.height / 2 - box.top;
      var bend = Math.max(24, Math.abs(x2 - x1) / 2);
      var path = document.createElementNS(ns, "path");
      path.setAttribute("d", "M" + x1 + "," + y1 + " C" + (x1 + bend) + "," + y1 + " " + (x2 - bend) + "," + y2 + " " + x2 + "," + y2);
      path.setAttribute("class", "handoff-arrow " + h[2]);
      path.setAttribute("marker-end", "url(#arrow-head)");
      path.setAttribute("data-from", h[0]);
      path.setAttribute("data-to", h[1]);
      svg.appendChild(path);
    });
  }
  if (lanes) {
    drawHandoffs();
    window.addEventListener("resize", function () { if (lanes) drawHandoffs(); });
  }

  // The kill switch's buttons (session page, agents page): POST to the admin API after a
  // confirmation; the admin token, when one is set, travels in the UI's cookie.
  document.querySelectorAll("[data-kill]").forEach(function (button) {
    button.addEventListener("click", function () {
      var question = button.getAttribute("data-confirm");
      if (question && !window.confirm(question)) return;
      button.disabled = true;
      fetch(button.getAttribute("data-kill"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ reason: "stopped from the UI" }),
      }).then(function (response) {
        if (response.ok) { window.location.reload(); return; }
        button.disabled = false;
        window.alert(response.status === 401 ? "The admin token is needed: open the UI with ?token=..." : "Failed: HTTP " + response.status);
      });
    });
  });

  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
})();
