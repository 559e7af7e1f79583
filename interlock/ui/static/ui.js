// interlock UI: live updates over server-sent events, and the copy button. No framework, no build.
(function () {
  "use strict";
  var indicator = document.getElementById("live");
  var label = indicator && indicator.querySelector(".live-text");
  var session = document.body.getAttribute("data-session");
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

  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
})();
