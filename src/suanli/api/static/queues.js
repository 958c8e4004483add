"use strict";
(() => {
  const { api, rows, jobLink, ago, el, poll } = SL;
  const fmt = (o) => Object.entries(o || {}).map(([m, n]) => `${m}: ${+n.toFixed(2)}`).join(", ") || "-";
  poll(async () => {
    const qs = await api("/v1/queues/usage");
    rows(document.querySelector("#queues tbody"), qs, (q) => [q.name, q.weight, fmt(q.quota), fmt(q.used),
      fmt(q.borrowed), q.running, q.pending]);
    const waiting = [];
    for (const st of ["pending", "requeued"]) waiting.push(...(await api("/v1/jobs?limit=500&state=" + st)).items);
    waiting.sort((a, b) => a.submit_time - b.submit_time);
    rows(document.querySelector("#waiting tbody"), waiting, (j) => [jobLink(j.id), j.name, j.queue, j.tenant,
      ago(j.submit_time), el("span", { title: j.reason || "", text: j.reason_detail || j.reason || "" })]);
  }, 3000);
})();
