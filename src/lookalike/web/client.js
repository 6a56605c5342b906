// What every lookalike page shares: the server's token (from ?token= once, then kept for this tab and removed
// from the address bar) and calls to the HTTP API with it. Plain JavaScript, nothing loaded from elsewhere.
"use strict";

window.lookalikeClient = (function () {
  const TOKEN_KEY = "lookalike-token";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  const params = new URLSearchParams(location.search);
  if (params.has("token")) {
    token = params.get("token") || "";
    sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }

  function setToken(value) {
    token = value;
    sessionStorage.setItem(TOKEN_KEY, token);
  }

  function withToken(url) {
    return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
  }

  async function api(url, options) {
    const headers = new Headers((options && options.headers) || {});
    if (token) headers.set("Authorization", "Bearer " + token);
    const response = await fetch(url, Object.assign({}, options, { headers }));
    let body = null;
    try {
      body = await response.json();
    } catch (ignored) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error((body && body.error) || response.status + " " + response.statusText);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  return { api, setToken, withToken };
})();
