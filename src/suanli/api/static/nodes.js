"use strict";
(() => {
  const { api, rows, el, poll, whoami } = SL;
  async function act(name, what) {
    try { await api(`/v1/nodes/${encodeURIComponent(name)}/${what}`, { method: "POST" }); await load(); }
    catch (e) { SL.showError(e); }
  }
  async function load() {
    const [me, nodes, fleet, devices] = await Promise.all([whoami(), api("/v1/nodes"), api("/v1/fleet"),
      api("/v1/devices")]);
    const byName = new Map(fleet.nodes.map((n) => [n.name, n]));
    const sick = new Map();  // node -> "device 3: XID 79; ..."
    for (const d of devices) {
      if (d.health === "healthy") continue;
      const s = `device ${d.local_index}: ${d.health_reason || d.health}`;
      sick.set(d.node, sick.has(d.node) ? sick.get(d.node) + "; " + s : s);
    }
    rows(document.querySelector("#nodes tbody"), nodes, (n) => {
      const f = byName.get(n.name) || { devices: [], lost: false };
      const busy = f.devices.filter((d) => d[2] === "busy").length;
      const bad = f.devices.filter((d) => d[2] === "unhealthy").length;
      const state = f.lost ? "lost" : n.drained ? "drained" : "up";
      const btn = me.admin ? el("button", { type: "button", class: "small", "data-node": n.name,
        text: n.drained ? "undrain" : "drain", onclick: () => act(n.name, n.drained ? "undrain" : "drain") }) : "";
      const tr = el("td", {}, btn);
      return [el("td", { id: "node-" + n.name }, n.name), n.rack, n.accelerator || "CPU only", n.devices, busy,
        el("span", { title: sick.get(n.name) || "", text: bad ? `${bad} (${sick.get(n.name) || ""})` : "0" }),
        (n.cpu_milli / 1000).toFixed(0), (n.memory_mib / 1024).toFixed(0) + " GiB",
        el("span", { class: "state st-" + state, text: state }), tr];
    });
    document.body.dataset.ready = "1";
  }
  poll(load, 5000);
})();
