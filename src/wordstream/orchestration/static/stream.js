// The stream status page: renders the view embedded by the server, then re-fetches it every few
// seconds. No framework and no CDN (the UI must work offline): DOM calls and inline SVG only, and
// every value is set as text, never as HTML, since words come from arbitrary input files.
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const initial = JSON.parse(document.getElementById("initial-view").textContent);
  const engine = initial.engine;
  let refreshSeconds = initial.refresh_seconds || 3;

  // -- formatting (the e2e test reads these back: keep them plain) ------------------------------
  function isNum(value) { return typeof value === "number" && isFinite(value); }
  function fmtInt(value) {
    return isNum(value) ? Math.round(value).toLocaleString("en-US") : "—";
  }
  function fmtRate(value) {
    return isNum(value)
      ? value.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 })
      : "—";
  }
  function fmtTime(iso) {
    if (!iso) return "—";
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, " UTC");
  }
  function fmtAge(seconds) {
    if (!isNum(seconds)) return "—";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }
  function ageBetween(fromIso, toIso) {
    const from = Date.parse(fromIso), to = Date.parse(toIso);
    return isNaN(from) || isNaN(to) ? null : Math.max(0, (to - from) / 1000);
  }

  // Every element showing a field gets the text and, in data-value, the raw value.
  function setField(name, text, raw) {
    document.querySelectorAll('[data-field="' + name + '"]').forEach(function (el) {
      el.textContent = text;
      el.dataset.value = raw === null || raw === undefined ? "" : String(raw);
    });
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  // -- charts -------------------------------------------------------------------------------------
  // The next "round" number (1, 2, 2.5, 5 times a power of ten) at or above v: readable axis labels.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(v)));
    const m = v / power;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10) * power;
  }

  // A line chart of one or more series over the recent batches; x is the batch, y starts at 0.
  function lineChart(svg, batches, series) {
    clear(svg);
    const W = 600, H = 200, left = 56, right = 12, top = 10, bottom = 28;
    if (!batches.length) {
      svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" },
        "No batches yet"));
      return;
    }
    let max = 0;
    series.forEach(function (s) {
      batches.forEach(function (b) { if (isNum(b[s.key])) max = Math.max(max, b[s.key]); });
    });
    max = niceCeil(max * 1.05);
    const x = function (i) {
      return batches.length === 1 ? left + (W - left - right) / 2
        : left + i * (W - left - right) / (batches.length - 1);
    };
    const y = function (v) { return top + (H - top - bottom) * (1 - v / max); };
    [0, 0.5, 1].forEach(function (f) {
      const v = max * f, yy = y(v);
      svg.appendChild(svgEl("line", { x1: left, x2: W - right, y1: yy, y2: yy, class: "grid" }));
      svg.appendChild(svgEl("text", { x: left - 6, y: yy + 4, "text-anchor": "end" },
        max >= 10 ? fmtInt(v) : v.toFixed(1)));
    });
    const first = batches[0], last = batches[batches.length - 1];
    svg.appendChild(svgEl("text", { x: left, y: H - 8, "text-anchor": "start" }, "batch " + first.batch_id));
    if (batches.length > 1) {
      svg.appendChild(svgEl("text", { x: W - right, y: H - 8, "text-anchor": "end" }, "batch " + last.batch_id));
    }
    series.forEach(function (s) {
      const points = [];
      batches.forEach(function (b, i) {
        if (!isNum(b[s.key])) return;
        points.push(x(i).toFixed(1) + "," + y(b[s.key]).toFixed(1));
        const dot = svgEl("circle", { cx: x(i), cy: y(b[s.key]), r: 2.5, class: "dot " + s.cls });
        dot.appendChild(svgEl("title", {}, "batch " + b.batch_id + ": " + s.label + " " + fmtRate(b[s.key])));
        svg.appendChild(dot);
      });
      svg.appendChild(svgEl("polyline", { points: points.join(" "), class: "line " + s.cls }));
    });
  }

  // Horizontal bars, one row per word, longest first (the server sends them ranked).
  function barChart(svg, rows) {
    clear(svg);
    const W = 600, row = 20, top = 4, labelW = 150, countW = 70;
    const H = Math.max(60, top * 2 + rows.length * row);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    if (!rows.length) {
      svg.appendChild(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" },
        "No words counted yet"));
      return;
    }
    const max = Math.max.apply(null, rows.map(function (r) { return r[1]; })) || 1;
    rows.forEach(function (r, i) {
      const word = String(r[0]), count = r[1], yy = top + i * row;
      const shown = word.length > 22 ? word.slice(0, 21) + "…" : word;
      const g = svgEl("g", { class: "word-row" });
      g.dataset.word = word;
      g.dataset.count = String(count);
      g.appendChild(svgEl("title", {}, word + ": " + fmtInt(count)));
      g.appendChild(svgEl("text", { x: labelW - 6, y: yy + 14, "text-anchor": "end", class: "word" }, shown));
      const width = Math.max(1, (W - labelW - countW) * count / max);
      g.appendChild(svgEl("rect", { x: labelW, y: yy + 3, width: width.toFixed(1), height: row - 6, class: "bar" }));
      g.appendChild(svgEl("text", { x: labelW + width + 6, y: yy + 14, class: "count" }, fmtInt(count)));
      svg.appendChild(g);
    });
  }

  // The run's knobs (the driver's status "knobs"), in the order of the trigger form.
  const KNOBS = [
    ["batch_seconds", "batch", function (v) { return v + " s"; }],
    ["max_files_per_trigger", "max files/trigger", String],
    ["max_bytes_per_trigger", "max bytes/trigger", fmtInt],
    ["state_store", "state store", String],
    ["shuffle_partitions", "shuffle partitions", String],
    ["remember_seconds", "remember", function (v) { return v + " s"; }],
  ];
  function renderKnobs(knobs) {
    const node = document.getElementById("knobs");
    clear(node);
    KNOBS.forEach(function (knob) {
      if (!knobs || !(knob[0] in knobs)) return;
      const value = knobs[knob[0]];
      const item = el("span", { class: "knob" }, knob[1] + " ");
      const shown = el("span", { "data-knob": knob[0] }, value === null ? "no limit" : knob[2](value));
      shown.dataset.value = value === null ? "" : String(value);
      item.appendChild(shown);
      node.appendChild(item);
    });
  }

  // -- the page -----------------------------------------------------------------------------------
  function renderNav(view) {
    const nav = document.getElementById("engines");
    clear(nav);
    view.engines.forEach(function (name) {
      // Relative links: the page works under any prefix and behind Airflow's base_url.
      const a = el("a", { href: encodeURIComponent(name) }, name);
      if (name === engine) a.className = "current";
      nav.appendChild(a);
    });
  }

  function render(view) {
    const st = view.status, lag = view.lag, ledger = view.ledger, res = view.results;
    setField("engine", view.engine, view.engine);
    setField("state", st.state, st.state);
    document.querySelector(".state").className = "state " + String(st.state).replace(/\s+/g, "-");
    setField("since", fmtTime(st.since), st.since);
    const sinceAge = st.since ? ageBetween(st.since, view.generated_at) : null;
    setField("since_age", sinceAge === null ? "" : "(" + fmtAge(sinceAge) + " ago)", sinceAge);
    setField("pid", st.pid === null || st.pid === undefined ? "—" : String(st.pid), st.pid);
    setField("keys", st.keys || "—", st.keys);
    renderKnobs(st.knobs);
    setField("batch_id", st.batch_id === null || st.batch_id === undefined ? "—" : String(st.batch_id), st.batch_id);
    setField("batch_time", fmtTime(st.batch_time), st.batch_time);
    setField("input_rows", fmtInt(st.input_rows), st.input_rows);
    setField("input_rows_per_second", fmtRate(st.input_rows_per_second), st.input_rows_per_second);
    setField("processed_rows_per_second", fmtRate(st.processed_rows_per_second), st.processed_rows_per_second);
    setField("batch_duration_ms", fmtInt(st.batch_duration_ms), st.batch_duration_ms);
    setField("files_in_batch", isNum(st.files_in_batch)
      ? fmtInt(st.files_in_batch) + (st.files_in_batch === 1 ? " file" : " files") : "—", st.files_in_batch);
    setField("files_processed", fmtInt(st.files_processed), st.files_processed);

    setField("lag_files", fmtInt(lag.files), lag.files);
    setField("lag_oldest_age", fmtAge(lag.oldest_age_seconds), lag.oldest_age_seconds);
    setField("lag_oldest_name", lag.oldest_name || "", lag.oldest_name);
    document.querySelector(".card.lag").classList.toggle("late",
      isNum(lag.oldest_age_seconds) && lag.oldest_age_seconds > 60);

    ["landed", "staged", "quarantined", "duplicate"].forEach(function (k) {
      setField("ledger_" + k, fmtInt(ledger.files[k]), ledger.files[k]);
    });
    setField("ledger_total", fmtInt(ledger.total_files), ledger.total_files);
    setField("epoch", ledger.epoch || "—", ledger.epoch);
    ["publishing", "published", "processed", "returned"].forEach(function (k) {
      setField("delivery_" + k, fmtInt(ledger.deliveries[k]), ledger.deliveries[k]);
    });
    const q = document.getElementById("quarantine");
    clear(q);
    if (!ledger.latest_quarantine.length) q.appendChild(el("li", { class: "muted" }, "none"));
    ledger.latest_quarantine.forEach(function (item) {
      const li = el("li");
      li.appendChild(el("span", { class: "name" }, item.name));
      li.appendChild(document.createTextNode(": " + (item.reason || "no reason recorded") + " "));
      li.appendChild(el("span", { class: "muted" }, fmtTime(item.at)));
      q.appendChild(li);
    });

    setField("top_count", String(res.top_words.length || 20), res.top_words.length);
    setField("distinct_words", fmtInt(res.distinct_words), res.distinct_words);
    setField("total_count", fmtInt(res.total_count), res.total_count);
    setField("result_batches", fmtInt(res.batches), res.batches);
    setField("semantics", res.semantics, res.semantics);
    barChart(document.getElementById("words-chart"), res.top_words);

    setField("recent_count", String(view.recent_batches.length), view.recent_batches.length);
    lineChart(document.getElementById("rates-chart"), view.recent_batches, [
      { key: "input_rows_per_second", cls: "input", label: "input rows/s" },
      { key: "processed_rows_per_second", cls: "processed", label: "processed rows/s" },
    ]);
    lineChart(document.getElementById("duration-chart"), view.recent_batches, [
      { key: "batch_duration_ms", cls: "duration", label: "ms" },
    ]);

    const notes = document.getElementById("notes");
    clear(notes);
    view.notes.forEach(function (text) { notes.appendChild(el("li", {}, text)); });
    const reason = document.getElementById("reason");
    reason.hidden = !st.reason;
    reason.textContent = st.reason ? "Reason: " + st.reason : "";

    document.getElementById("refreshed").textContent =
      "updated " + fmtTime(view.generated_at) + " · refreshes every " + refreshSeconds + " s";
    document.body.dataset.generatedAt = view.generated_at;
  }

  function problem(text) {
    const node = document.getElementById("problem");
    node.hidden = !text;
    node.textContent = text || "";
  }

  function poll() {
    fetch("api/" + encodeURIComponent(engine), {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" },
    }).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        throw new Error("signed out of Airflow: reload the page to sign in again");
      }
      if (!response.ok) throw new Error("the server answered HTTP " + response.status);
      return response.json();
    }).then(function (view) {
      refreshSeconds = view.refresh_seconds || refreshSeconds;
      render(view);
      problem("");
    }).catch(function (error) {
      problem("not refreshed: " + error.message);
    }).then(function () {
      window.setTimeout(poll, refreshSeconds * 1000);
    });
  }

  renderNav(initial);
  render(initial);
  window.setTimeout(poll, refreshSeconds * 1000);
})();
