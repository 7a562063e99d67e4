// The semrec HTTP API as the page uses it: JSON in and out, the API key (when the server
// asks for one) kept for this browser tab and sent as X-API-Key.

const KEY = "semrec-api-key";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function readsNeedKey() {
  const meta = document.querySelector('meta[name="semrec-reads-need-key"]');
  return meta !== null && meta.content === "true";
}

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

let asking = null;

// Show the key dialog once (concurrent callers share it); resolves when a key is entered.
export function askKey(message = "") {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const error = document.getElementById("key-error");
  error.hidden = !message;
  error.textContent = message;
  asking = new Promise((resolve) => {
    form.addEventListener("submit", () => {
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      asking = null;
      resolve();
    }, { once: true });
  });
  dialog.showModal();
  input.focus();
  return asking;
}

async function request(method, path, body, retried = false) {
  if (readsNeedKey() && !apiKey()) await askKey();
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (response.status === 401 && !retried) {
    await askKey(apiKey() ? "That key was refused; try again." : "");
    return request(method, path, body, true);
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, data.detail || response.statusText);
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);

// A query string from an object, leaving out empty values.
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "" && value !== false) {
      search.set(name, String(value));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// Point <img> at an API image: directly, or (when reads need the key, which an <img>
// cannot send) through fetch with the key and an object URL.
export async function loadImage(img, url) {
  if (!apiKey()) {
    img.src = url;
    return;
  }
  const response = await fetch(url, { headers: headers() });
  if (response.ok) img.src = URL.createObjectURL(await response.blob());
}
