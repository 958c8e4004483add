"use strict";
(() => {
  const { api, rows, when, el, poll, token } = SL;
  const $ = (id) => document.getElementById(id);
  const id = $("job").dataset.id;
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  let job = null, following = false;

  function render(j, events) {
    $("job-name").textContent = j.name;
    $("job-state").textContent = j.state;
    $("job-state").className = "state st-" + j.state;
    $("cancel").hidden = FINAL.has(j.state) || j.cancel_requested;
    const facts = [["tenant", j.tenant], ["queue", j.queue], ["priority", j.priority], ["submitted", when(j.submit_time)],
      ["updated", when(j.updated_at)], ["attempts", j.attempts], ["failures", j.failures],
      ["exit code", j.exit_code ?? ""], ["reason", (j.reason || "") + (j.reason_detail ? ": " + j.reason_detail : "")]];
    $("summary").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    rows(document.querySelector("#attempts tbody"), j.attempt_list, (a) => [a.n, when(a.started_at), when(a.ended_at),
      a.outcome || "", a.exit_code ?? "", (a.placement.nodes || []).map((n, i) =>
        `${n}[${(a.placement.local[i] || []).join(",")}]`).join(" ") + (a.placement.model ? " " + a.placement.model : "")]);
    rows(document.querySelector("#events tbody"), events, (e) => [when(e.at), e.kind, e.message]);
    $("spec").textContent = JSON.stringify(j.spec, null, 2);
  }

  async function logs() {
    const pre = $("logs");
    if ($("follow").checked && !FINAL.has(job.state)) {
      if (following) return;
      following = true;
      try {
        const r = await fetch(`/v1/jobs/${id}/logs?follow=true`, { headers: { Authorization: "Bearer " + token() } });
        if (!r.ok) throw new Error("logs: " + r.status);
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        pre.textContent = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          pre.textContent += dec.decode(value, { stream: true });
          pre.scrollTop = pre.scrollHeight;
          if (!$("follow").checked) { reader.cancel(); break; }
        }
      } finally { following = false; }
    } else if (!following) {
      const r = await api(`/v1/jobs/${id}/logs`, { raw: true });
      pre.textContent = await r.text();
    }
  }

  $("cancel").addEventListener("click", async () => {
    try { await api(`/v1/jobs/${id}/cancel`, { method: "POST" }); } catch (e) { SL.showError(e); }
  });
  $("follow").addEventListener("change", () => logs().catch(SL.showError));
  let logsLoaded = false;
  poll(async () => {
    try {
      [job] = [await api(`/v1/jobs/${id}`)];
    } catch (e) {
      if (e.status === 404) { $("job").replaceChildren(el("p", { class: "error", text: `No job ${id} (for this token).` })); }
      throw e;
    }
    render(job, await api(`/v1/jobs/${id}/events`));
    if (!logsLoaded || (FINAL.has(job.state) && !following)) { logsLoaded = true; logs().catch(SL.showError); }
    document.body.dataset.ready = "1";
  }, 2000);
})();
