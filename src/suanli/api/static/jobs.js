"use strict";
(() => {
  const { api, rows, jobLink, when, el, poll } = SL;
  const $ = (id) => document.getElementById(id);
  let items = [], next = null;
  const params = new URLSearchParams(location.search);
  if (params.get("state")) $("f-state").value = params.get("state");
  if (params.get("queue")) $("f-queue").value = params.get("queue");
  if (params.get("q")) $("f-search").value = params.get("q");

  function query(after) {
    const p = new URLSearchParams({ limit: "200" });
    if ($("f-state").value) p.set("state", $("f-state").value);
    if ($("f-queue").value.trim()) p.set("queue", $("f-queue").value.trim());
    if (after) p.set("after", after);
    return "/v1/jobs?" + p;
  }
  function show() {
    const q = $("f-search").value.trim().toLowerCase();
    const shown = q ? items.filter((j) => String(j.id) === q || j.name.toLowerCase().includes(q) ||
      j.tenant.toLowerCase().includes(q)) : items;
    rows(document.querySelector("#jobs tbody"), shown, (j) => [jobLink(j.id), el("a", { href: "/ui/jobs/" + j.id,
      text: j.name }), j.tenant, j.queue, el("span", { class: "state st-" + j.state, text: j.state }),
      when(j.submit_time), j.attempts, el("span", { title: j.reason_detail || "", text: j.reason || "" })]);
    $("more").hidden = next === null;
  }
  async function load() {
    const page = await api(query());
    items = page.items; next = page.next;
    show();
  }
  $("more").addEventListener("click", async () => {
    const page = await api(query(next));
    items = items.concat(page.items); next = page.next;
    show();
  });
  for (const id of ["f-state", "f-queue"]) $(id).addEventListener("change", () => load().catch(SL.showError));
  $("f-search").addEventListener("input", show);
  poll(load, 3000);
})();
