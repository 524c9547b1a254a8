// keysentry's pages work without this script; it adds a copy button's action, a
// confirmation before destructive forms (data-confirm="…"), and sends a form marked
// data-autosubmit (a portal link's "Continue") as soon as the page has loaded.
"use strict";
for (const form of document.querySelectorAll("form[data-autosubmit]")) form.submit();
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
  } catch (_) {
    document.execCommand("copy");  // older browsers, or a page not served over HTTPS
  }
  const status = document.getElementById(button.dataset.copy + "-status");
  if (status) status.textContent = "Copied to the clipboard.";
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
