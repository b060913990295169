// launchctl ui: live updates over server-sent events. No build step, no framework.
// Every value from the server goes into the page as text (textContent), never as HTML.
"use strict";

(function () {
  var TERMINAL = { finished: 1, failed: 1, stopped: 1, preempted: 0 };

  function fmtDuration(s) {
    if (s === null || s === undefined || s === "") return "-";
    s = Math.floor(Number(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }

  function cell(cls, text) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text === null || text === undefined ? "" : String(text);
    return td;
  }

  function matches(table, run) {
    var q = table.dataset.queue, states = table.dataset.states, project = table.dataset.project;
    if (q && (run.queue || "(direct)") !== q) return false;
    if (project && run.project !== project) return false;
    if (states && states.split(",").indexOf(run.state) < 0) return false;
    return true;
  }

  function fillRow(tr, run) {
    tr.dataset.state = run.state;
    var s = tr.querySelector("td.state");
    if (s) s.textContent = run.state_cell || run.state;
    var ex = tr.querySelector("td.exit");
    if (ex) ex.textContent = run.exit_code === null || run.exit_code === undefined ? "" : String(run.exit_code);
    var g = tr.querySelector("td.gpus");
    if (g) g.textContent = (run.gpus || []).join(",");
    var d = tr.querySelector("td.duration");
    if (d) {
      d.dataset.started = run.started_at || "";
      d.dataset.ended = run.ended_at || "";
      d.textContent = fmtDuration(run.duration);
    }
  }

  function newRow(table, run) {
    var tr = document.createElement("tr");
    tr.id = "run-" + run.id;
    var a = document.createElement("a");
    a.href = "/runs/" + encodeURIComponent(run.id);
    a.textContent = run.id;
    var id = cell("id", "");
    id.appendChild(a);
    tr.appendChild(id);
    tr.appendChild(cell("name", run.name));
    tr.appendChild(cell("queue", run.queue || "(direct)"));
    tr.appendChild(cell("state", run.state));
    table.querySelectorAll("th.cfg").forEach(function (th) {
      var v = (run.config || {})[th.dataset.key];
      tr.appendChild(cell("cfg", v === undefined ? "" : v));
    });
    tr.appendChild(cell("gpus", ""));
    tr.appendChild(cell("exit", ""));
    tr.appendChild(cell("duration", ""));
    fillRow(tr, run);
    return tr;
  }

  function liveRuns(table) {
    var body = table.tBodies[0];
    // From the event the page was made at: nothing that changed meanwhile is missed.
    var es = new EventSource("/events?after=" + encodeURIComponent(table.dataset.after || ""));
    es.addEventListener("run", function (ev) {
      var run = JSON.parse(ev.data);
      var tr = document.getElementById("run-" + run.id);
      if (tr && tr.closest("table") === table) {
        fillRow(tr, run);
      } else if (table.dataset.add === "1" && matches(table, run)) {
        body.insertBefore(newRow(table, run), body.firstChild);
        var none = document.getElementById("no-runs");
        if (none) none.remove();
      }
    });
    // Running rows' durations tick between events.
    setInterval(function () {
      var now = Date.now() / 1000;
      table.querySelectorAll("td.duration").forEach(function (d) {
        if (d.dataset.started && !d.dataset.ended) {
          d.textContent = fmtDuration(now - Number(d.dataset.started));
        }
      });
    }, 1000);
  }

  function liveOverview(root) {
    var es = new EventSource("/events");
    var timer = null;
    function refresh() {
      // Counts come from the server: fetch the page again (not a reload) and swap the parts.
      if (timer) return;
      timer = setTimeout(function () {
        timer = null;
        fetch("/", { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          ["queues", "agents", "gpus", "active"].forEach(function (id) {
            var fresh = doc.getElementById(id), old = document.getElementById(id);
            if (fresh && old) old.replaceWith(document.importNode(fresh, true));
          });
        });
      }, 250);
    }
    es.addEventListener("run", refresh);
    setInterval(refresh, 5000); // heartbeats age without a run changing
  }

  function liveLog(pre) {
    if (pre.dataset.ended === "1") return;
    var es = new EventSource(pre.dataset.src);
    var state = document.getElementById("run-state");
    var exit = document.getElementById("run-exit");
    es.addEventListener("line", function (ev) {
      var atBottom = window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
      pre.appendChild(document.createTextNode((pre.textContent ? "\n" : "") + ev.data));
      if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    });
    function onState(ev) {
      var s = JSON.parse(ev.data);
      if (state) {
        state.textContent = s.state;
        state.dataset.state = s.state;
      }
      if (exit) exit.textContent = s.exit_code === null ? "-" : String(s.exit_code);
      if (TERMINAL[s.state]) {
        var c = document.getElementById("cancel");
        if (c) c.disabled = true;
      }
    }
    es.addEventListener("state", onState);
    es.addEventListener("end", function (ev) {
      onState(ev);
      es.close();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var runs = document.querySelector('table[data-live="runs"]');
    if (runs) liveRuns(runs);
    var overview = document.querySelector('[data-live="overview"]');
    if (overview) liveOverview(overview);
    var log = document.querySelector('pre[data-live="log"]');
    if (log) liveLog(log);
  });
})();
