// The player page's script (/play/{app}/{name}): plays the live stream with hls.js in
// low-latency mode on its LL-HLS playlist, or with `?via=flv` with mpegts.js on
// WebSocket-FLV, and shows what the player knows about latency. It reads the app, the name
// and `?token=` from the page's own URL (the server writes nothing into the page).
//
// `window.corecastPlayer` holds the state the page shows, for the browser tests and for
// anyone with the developer tools open.
"use strict";

(() => {
  const RETRY_MS = 2000;
  const REFRESH_MS = 500;
  // A player whose video stopped moving for this long (or never started) is made anew: a
  // publisher restart starts the stream over under new names, which neither player follows.
  const STALL_MS = 6000;
  const START_MS = 20000;
  const $ = (id) => document.getElementById(id);

  // ["play", app, name], each still percent-encoded as in the URL.
  const [, app, name] = location.pathname.split("/").filter(Boolean);
  const query = new URLSearchParams(location.search);
  const token = query.get("token");
  const via = query.get("via") === "flv" ? "flv" : "hls";
  const video = $("video");

  const state = {
    mode: via,
    status: "starting",
    parts: 0,
    fragments: 0,
    errors: [],
    restarts: 0,
    hls: null,
    flv: null,
  };
  // The current player's start, its last progress, and whether it has played at all.
  const watch = { startedAt: 0, progressAt: 0, time: -1, played: false, retry: null };
  window.corecastPlayer = state;

  // The last few fatal errors (a page left waiting for hours keeps only these).
  function noteError(text) {
    state.errors.push(text);
    if (state.errors.length > 20) state.errors.shift();
  }

  function status(text, playing = false) {
    state.status = text;
    $("status").textContent = text;
    $("status").classList.toggle("playing", playing);
  }

  function linkTo(mode) {
    const q = new URLSearchParams();
    if (token) q.set("token", token);
    if (mode === "flv") q.set("via", "flv");
    const s = q.toString();
    return location.pathname + (s ? `?${s}` : "");
  }

  function header() {
    const title = `${decodeURIComponent(app)}/${decodeURIComponent(name)}`;
    $("title").textContent = title;
    document.title = `${title} · Corecast`;
    for (const mode of ["hls", "flv"]) {
      const link = $(`via-${mode}`);
      link.href = linkTo(mode);
      link.classList.toggle("current", mode === via);
    }
  }

  const seconds = (s) => (Number.isFinite(s) ? `${s.toFixed(2)} s` : "–");

  function bufferedAhead() {
    const b = video.buffered;
    return b.length ? b.end(b.length - 1) - video.currentTime : NaN;
  }

  // Refreshes the panel; the same numbers land in `state` for the tests.
  function refresh() {
    state.currentTime = video.currentTime;
    state.bufferedAhead = bufferedAhead();
    $("position").textContent = seconds(video.currentTime);
    $("buffer").textContent = seconds(state.bufferedAhead);
    $("loaded").textContent = `${state.parts} / ${state.fragments}`;
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    $("dropped").textContent = quality ? `${quality.droppedVideoFrames} of ${quality.totalVideoFrames}` : "–";
    const hls = state.hls;
    if (hls) {
      state.latency = hls.latency;
      state.targetLatency = hls.targetLatency;
      state.lowLatencyMode = hls.lowLatencyMode;
      const date = hls.playingDate;
      state.clockLatency = date ? (Date.now() - date.getTime()) / 1000 : NaN;
      state.edge = hls.liveSyncPosition != null ? hls.liveSyncPosition - video.currentTime : NaN;
      const clock = Number.isFinite(state.clockLatency) ? `, ${seconds(state.clockLatency)} by the clock (PROGRAM-DATE-TIME)` : "";
      $("latency").textContent = `${seconds(hls.latency)} (target ${seconds(hls.targetLatency)})${clock}`;
      $("edge").textContent = seconds(state.edge);
    } else if (state.flv) {
      state.latency = state.bufferedAhead;
      $("latency").textContent = `${seconds(state.bufferedAhead)} buffered (FLV has no clock)`;
      $("edge").textContent = seconds(state.bufferedAhead);
    }
  }

  function playing() {
    status(`playing (${via === "flv" ? "WebSocket-FLV" : "LL-HLS"})`, true);
  }

  function startPlayback() {
    video.play().catch((e) => status(`press play (${e.name})`));
  }

  function hlsUrl() {
    const path = `/hls/${app}/${name}/index.m3u8`;
    return token ? `${path}?token=${encodeURIComponent(token)}` : path;
  }

  function playHls() {
    const Hls = window.Hls;
    if (!Hls || !Hls.isSupported()) {
      // Safari plays LL-HLS itself.
      if (video.canPlayType("application/vnd.apple.mpegurl")) {
        $("player").textContent = "the browser's own HLS";
        video.src = hlsUrl();
        startPlayback();
        return;
      }
      status("this browser cannot play HLS (no Media Source Extensions)");
      return;
    }
    $("player").textContent = `hls.js ${Hls.version}, low-latency mode`;
    // Up to 1.5x speed to catch up with hls.js's target latency (PART-HOLD-BACK) after a
    // start or a stall; without it hls.js stays as far behind as it started.
    const hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, backBufferLength: 30 });
    state.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, startPlayback);
    hls.on(Hls.Events.FRAG_LOADED, (_, data) => {
      if (data.part) state.parts += 1;
      else state.fragments += 1;
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (!data.fatal) return;
      noteError(`${data.type}: ${data.details}`);
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
        return;
      }
      // Not live (yet), ended, or refused: look again shortly.
      const code = data.response && data.response.code;
      retry(code === 403 ? "not authorized to play this stream (check ?token=)" : "waiting for the stream…");
    });
    hls.loadSource(hlsUrl());
    hls.attachMedia(video);
  }

  function playFlv() {
    const mpegts = window.mpegts;
    if (!mpegts || !mpegts.getFeatureList().mseLivePlayback) {
      status("this browser cannot play FLV (no Media Source Extensions)");
      return;
    }
    $("player").textContent = `mpegts.js ${mpegts.version || ""}, WebSocket-FLV`;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/${app}/${name}.flv`;
    const flv = mpegts.createPlayer(
      { type: "flv", isLive: true, url },
      {
        enableWorker: false,
        enableStashBuffer: false,
        liveBufferLatencyChasing: true,
        liveBufferLatencyMaxLatency: 1.5,
        liveBufferLatencyMinRemain: 0.3,
      },
    );
    state.flv = flv;
    flv.on(mpegts.Events.ERROR, (type, details) => {
      noteError(`${type}: ${details}`);
      retry("waiting for the stream…");
    });
    flv.attachMediaElement(video);
    flv.load();
    startPlayback();
  }

  function stop() {
    clearTimeout(watch.retry);
    watch.retry = null;
    if (state.hls) state.hls.destroy();
    if (state.flv) state.flv.destroy();
    state.hls = null;
    state.flv = null;
  }

  function start() {
    stop();
    Object.assign(watch, { startedAt: Date.now(), progressAt: Date.now(), time: -1, played: false });
    if (via === "flv") playFlv();
    else playHls();
  }

  // Drops the player and starts a new one in a while, saying why meanwhile.
  function retry(why) {
    stop();
    status(why);
    watch.retry = setTimeout(start, RETRY_MS);
  }

  // Once a second: a player whose video stalled (not paused by the viewer) starts over.
  function watchdog() {
    if (!state.hls && !state.flv) return;
    const now = Date.now();
    if (video.paused || video.currentTime !== watch.time) {
      watch.time = video.currentTime;
      watch.progressAt = now;
      return;
    }
    const stalled = watch.played ? now - watch.progressAt > STALL_MS : now - watch.startedAt > START_MS;
    if (stalled) {
      state.restarts += 1;
      retry("the stream stalled or restarted: starting again…");
    }
  }

  header();
  video.addEventListener("playing", () => {
    watch.played = true;
    playing();
  });
  video.addEventListener("waiting", () => status("buffering…"));
  // The stream ended (an FLV response ends when the publisher leaves; the video plays out
  // what it has, then ends, paused, which the watchdog leaves alone): look for it again.
  video.addEventListener("ended", () => {
    if (state.hls || state.flv) retry("the stream ended: waiting for it to come back…");
  });
  setInterval(refresh, REFRESH_MS);
  setInterval(watchdog, 1000);
  start();
})();
