"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const t = document.getElementById("token").value.trim();
  const err = document.getElementById("login-error");
  const r = await fetch("/v1/whoami", { headers: { Authorization: "Bearer " + t } });
  if (!r.ok) { err.textContent = "That token was refused."; err.hidden = false; return; }
  localStorage.setItem(SL.KEY, t);
  const next = new URLSearchParams(location.search).get("next");
  location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
});
