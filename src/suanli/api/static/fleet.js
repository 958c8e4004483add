// The fleet heat-map: racks -> nodes -> devices, one small cell per device, coloured by state, tenant or job.
"use strict";
(() => {
  const { api, el, rows, hue, poll } = SL;
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (t) => String(t).replace(/[&<>"']/g, (c) => ESC[c]);
  const STATES = ["busy", "free", "drained", "unhealthy", "lost"];
  let data = null;
  const colourSel = document.getElementById("colour");

  function cellColour(st, js) {
    const by = colourSel.value;
    if (by === "state" || st !== "busy") return null;  // the state's class colours it
    if (!js.length) return "#8a8f98";  // busy with another tenant's job
    const j = data.jobs[js[0]];
    return by === "tenant" ? hue("t:" + j.tenant) : hue("j:" + js[0]);
  }

  function legend() {
    const box = document.getElementById("legend");
    const items = [];
    if (colourSel.value === "state") {
      for (const s of STATES) items.push(el("span", {}, el("i", { class: "c s-" + s }), s));
    } else {
      const seen = new Map();
      for (const [id, j] of Object.entries(data.jobs)) {
        const key = colourSel.value === "tenant" ? j.tenant : id;
        if (!seen.has(key)) seen.set(key, colourSel.value === "tenant" ? hue("t:" + j.tenant) : hue("j:" + id));
      }
      for (const [k, c] of [...seen].slice(0, 40)) {
        const i = el("i", { class: "c" }); i.style.background = c;
        items.push(el("span", {}, i, colourSel.value === "tenant" ? k : "job " + k + " " + data.jobs[k].name));
      }
      for (const s of STATES.filter((x) => x !== "busy")) items.push(el("span", {}, el("i", { class: "c s-" + s }), s));
    }
    box.replaceChildren(...items);
  }

  function render() {
    rows(document.querySelector("#totals tbody"), data.totals,
      (t) => [t.vendor, t.model, t.total, t.busy, t.free, t.drained, t.unhealthy, t.lost]);
    const racks = new Map();
    data.nodes.forEach((n, ni) => {
      if (!racks.has(n.rack)) racks.set(n.rack, []);
      racks.get(n.rack).push(ni);
    });
    const frag = document.createDocumentFragment();
    let total = 0;
    for (const [rack, nis] of racks) {
      const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
      // one markup string per rack (10,000 cells): cells hold only numbers and a state from the fixed list; the
      // node name, the one piece of user data, goes in through esc() (attribute-escaped)
      let html = "";
      const coloured = [];
      for (const ni of nis) {
        const n = data.nodes[ni];
        html += `<div class="node${n.drained ? " drained" : ""}${n.lost ? " lost" : ""}" title="${esc(n.name)}" data-n="${ni}">`;
        n.devices.forEach(([idx, model, st, js], di) => {
          const s = STATES.includes(st) ? st : "lost";
          counts[s]++; total++;
          html += `<i class="c s-${s}" data-n="${ni}" data-d="${di}"></i>`;
          const col = cellColour(s, js);
          if (col) coloured.push([ni, di, col]);
        });
        html += "</div>";
      }
      const nodesBox = el("div", { class: "nodes" });
      nodesBox.innerHTML = html;
      if (coloured.length) {
        const boxes = new Map([...nodesBox.children].map((b) => [+b.dataset.n, b]));
        for (const [ni, di, col] of coloured) boxes.get(ni).children[di].style.background = col;
      }
      const summary = STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ");
      frag.append(el("section", { class: "rack" }, el("h3", {}, el("span", { text: "rack " + rack }),
        el("span", { class: "muted", text: ` ${nis.length} nodes: ${summary}` })), nodesBox));
    }
    document.getElementById("heatmap").replaceChildren(frag);
    document.getElementById("fleet-summary").textContent = `${total} devices on ${data.nodes.length} nodes`;
    legend();
  }

  document.getElementById("heatmap").addEventListener("mouseover", (ev) => {
    const t = ev.target;
    if (!t.dataset || t.dataset.n === undefined) return;
    const n = data.nodes[+t.dataset.n];
    const info = document.getElementById("cell-info");
    if (t.dataset.d === undefined) { info.textContent = `node ${n.name} (rack ${n.rack}, ${n.devices.length} devices)`; return; }
    const [idx, model, st, js] = n.devices[+t.dataset.d];
    const who = js.map((j) => `job ${j} ${data.jobs[j].name} (tenant ${data.jobs[j].tenant}, queue ${data.jobs[j].queue})`);
    info.textContent = `${n.name} device ${idx} (${model}): ${st}` + (who.length ? " - " + who.join("; ")
      : st === "busy" ? " - another tenant's job" : "");
  });
  document.getElementById("heatmap").addEventListener("click", (ev) => {
    const t = ev.target;
    if (t.dataset && t.dataset.n !== undefined) {
      const n = data.nodes[+t.dataset.n];
      const js = t.dataset.d !== undefined ? n.devices[+t.dataset.d][3] : [];
      location.href = js.length ? "/ui/jobs/" + js[0] : "/ui/nodes#" + encodeURIComponent(n.name);
    }
  });
  colourSel.addEventListener("change", () => data && render());
  poll(async () => {
    const t0 = performance.now();
    data = await api("/v1/fleet");
    render();
    document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
    document.body.dataset.ready = "1";
  }, 5000);
})();
