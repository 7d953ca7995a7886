// The browser client of liveinterp's streaming protocol (liveinterp/serving/protocol.py),
// loaded by index.html. Plain JS, no build step, no external URLs.
//
// Capture: microphone (getUserMedia) or a picked audio file (decoded and played in real
// time) -> AudioContext at 16 kHz -> an AudioWorklet (its source inlined below, loaded
// from a Blob URL) that posts each 128-sample render quantum -> 100 ms float32 frames sent
// as binary websocket messages (little-endian: the byte order of every platform browsers
// run on) to ws://<this host>/ws after a `start` message {format: "float32"}.
// Playback: each `audio` header is followed by one binary message of float32 samples at
// the session's output_sample_rate; they are queued back to back (gap-free, in order) on a
// second AudioContext. Captions: `source` and `text` deltas are appended as they arrive;
// `turn` events give a latency line (ready_ms - end_ms) and a row of the turns table.
// Stop sends {"type": "end"}, waits for `done` (status "done") and closes the socket.
"use strict";

(() => {
  const SAMPLE_RATE = 16000;          // what the server's model reads
  const FRAME_SAMPLES = 1600;         // 100 ms of audio per binary message
  const PLAYBACK_LEAD_S = 0.1;        // first translated chunk starts this far ahead

  // One render quantum (128 samples, channel 0 after mono down-mix) per message.
  const WORKLET_SOURCE = `
    class LiveinterpCapture extends AudioWorkletProcessor {
      process(inputs) {
        const channel = inputs[0] && inputs[0][0];
        if (channel && channel.length) this.port.postMessage(channel.slice(0));
        return true;
      }
    }
    registerProcessor("liveinterp-capture", LiveinterpCapture);
  `;

  const $ = (id) => document.getElementById(id);
  const ui = {
    start: $("start"), stop: $("stop"), file: $("file"), transcript: $("transcript"),
    status: $("status"), error: $("error"), source: $("source"),
    translation: $("translation"), latency: $("latency"), turns: $("turns"),
    summary: $("summary"), received: $("audio-received"), scheduled: $("audio-scheduled"),
    played: $("audio-played"), sent: $("audio-sent"), outputRate: $("output-rate"),
  };

  function setStatus(text) { ui.status.textContent = text; }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  /** One streaming session: a websocket, a capture graph and a playback queue. */
  class Session {
    constructor(file, transcript) {
      this.file = file;                 // a File to stream instead of the microphone, or null
      this.transcript = transcript;
      this.ws = null;
      this.capture = null;              // AudioContext at 16 kHz
      this.playback = null;             // AudioContext at the device rate
      this.nodes = [];                  // capture nodes to disconnect on stop
      this.mediaStream = null;
      this.pending = [];                // captured Float32Arrays not yet sent
      this.pendingSamples = 0;
      this.audioHeader = null;          // the `audio` event whose binary message is next
      this.outputRate = 0;
      this.nextTime = 0;                // playback time where the next chunk starts
      this.counts = { sent: 0, received: 0, scheduled: 0, played: 0 };
      this.state = "connecting";        // connecting | streaming | ending | done | error | closed
      this.stopped = false;             // Stop was pressed
    }

    async start() {
      // Both contexts are created inside the click handler (browsers' autoplay policy).
      const capture = this.capture = new AudioContext({ sampleRate: SAMPLE_RATE });
      this.playback = new AudioContext();
      const url = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "text/javascript" }));
      try {
        await capture.audioWorklet.addModule(url);
      } finally {
        URL.revokeObjectURL(url);
      }
      if (this.stopped) return;
      const input = await this.openInput();
      if (this.stopped) { this.stopCapture(); return; }   // Stop while the mic was asked for
      await this.connect();
      if (this.state !== "streaming") return;   // refused (error shown) or closed
      const worklet = new AudioWorkletNode(capture, "liveinterp-capture", {
        numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1,
        channelCountMode: "explicit", channelInterpretation: "speakers",
      });
      worklet.port.onmessage = (ev) => this.onCaptured(ev.data);
      // The worklet runs only while pulled by the destination; a silent gain keeps the
      // captured audio out of the speakers.
      const mute = capture.createGain();
      mute.gain.value = 0;
      input.connect(worklet).connect(mute).connect(capture.destination);
      this.nodes.push(input, worklet, mute);
      if (input instanceof AudioBufferSourceNode) {
        input.onended = () => { if (this.state === "streaming") this.stop(); };
        input.start();
      }
      await capture.resume();
      await this.playback.resume();
      if (this.state === "streaming") {
        setStatus(this.file ? `streaming ${this.file.name}` : "listening");
      }
    }

    /** The capture source node: the picked file (decoded at 16 kHz) or the microphone. */
    async openInput() {
      if (this.file) {
        let buffer;
        try {
          buffer = await this.capture.decodeAudioData(await this.file.arrayBuffer());
        } catch (e) {
          throw new Error(`cannot decode ${this.file.name}: ${e.message || e}`);
        }
        const node = this.capture.createBufferSource();
        node.buffer = buffer;
        return node;
      }
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new Error("no microphone API here (the page must be served from localhost or https)");
      }
      this.mediaStream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false,
                 autoGainControl: false },
      });
      return this.capture.createMediaStreamSource(this.mediaStream);
    }

    /** Opens the websocket, sends `start`, resolves on `ready` (or on error/close). */
    connect() {
      return new Promise((resolve) => {
        const scheme = location.protocol === "https:" ? "wss" : "ws";
        const ws = new WebSocket(`${scheme}://${location.host}/ws`);
        this.ws = ws;
        this.onReady = resolve;
        ws.binaryType = "arraybuffer";
        ws.onopen = () => {
          ws.send(JSON.stringify({ type: "start", sample_rate: SAMPLE_RATE,
                                   format: "float32", transcript: this.transcript }));
        };
        ws.onmessage = (ev) => {
          try {
            if (typeof ev.data === "string") this.onEvent(JSON.parse(ev.data));
            else this.onAudio(ev.data);
          } catch (e) {
            showError(`bad message from the server: ${e.message || e}`);
          }
        };
        ws.onerror = () => showError(`websocket error (${ws.url})`);
        ws.onclose = (ev) => this.onClose(ev);
      });
    }

    onEvent(msg) {
      switch (msg.type) {
        case "ready":
          if (msg.sample_rate !== SAMPLE_RATE || msg.audio_format !== "float32") {
            throw new Error(`unexpected ready ${JSON.stringify(msg)}`);
          }
          this.outputRate = msg.output_sample_rate;
          ui.outputRate.textContent = String(this.outputRate);
          this.state = "streaming";
          setStatus(`ready (session ${msg.session})`);
          this.onReady();
          break;
        case "source":
          ui.source.textContent += msg.text;
          break;
        case "text":
          ui.translation.textContent += msg.text;
          break;
        case "audio":
          if (this.audioHeader) throw new Error(`audio header for chunk ${msg.chunk} before the samples of chunk ${this.audioHeader.chunk}`);
          this.audioHeader = msg;
          break;
        case "turn":
          this.onTurn(msg);
          break;
        case "error":
          this.state = "error";
          showError(`server error ${msg.code}: ${msg.message}`);
          setStatus(`error: ${msg.code}`);
          this.onReady();
          break;
        case "done":
          this.state = "done";
          ui.summary.textContent = `${msg.chunks} chunks, ${msg.audio_s} s of translated speech.`;
          setStatus("done");
          this.ws.close(1000, "done");
          break;
        default:
          throw new Error(`unknown event type ${JSON.stringify(msg.type)}`);
      }
    }

    /** The binary message after an `audio` header: queue it right after the last chunk. */
    onAudio(data) {
      const header = this.audioHeader;
      this.audioHeader = null;
      if (!header) throw new Error(`binary message of ${data.byteLength} bytes without an audio header`);
      const samples = new Float32Array(data);
      if (samples.length !== header.samples) {
        throw new Error(`audio of chunk ${header.chunk}: ${samples.length} samples, header said ${header.samples}`);
      }
      this.counts.received += samples.length;
      ui.received.textContent = String(this.counts.received);
      if (!samples.length) return;
      const buffer = this.playback.createBuffer(1, samples.length, this.outputRate);
      buffer.copyToChannel(samples, 0);
      const node = this.playback.createBufferSource();
      node.buffer = buffer;
      node.connect(this.playback.destination);
      const at = Math.max(this.nextTime, this.playback.currentTime + PLAYBACK_LEAD_S);
      node.onended = () => {
        this.counts.played += samples.length;
        ui.played.textContent = String(this.counts.played);
      };
      node.start(at);
      this.nextTime = at + buffer.duration;
      this.counts.scheduled += samples.length;
      ui.scheduled.textContent = String(this.counts.scheduled);
    }

    onTurn(msg) {
      const lag = msg.ready_ms - msg.end_ms;
      ui.latency.textContent =
        `${lag.toFixed(0)} ms after the source (chunk ${msg.chunk}, source read to ${msg.end_ms.toFixed(0)} ms)`;
      const row = document.createElement("tr");
      for (const v of [msg.chunk, msg.end_ms.toFixed(0), msg.ready_ms.toFixed(0),
                       lag.toFixed(0), (msg.speech_ms || 0).toFixed(0), msg.text || ""]) {
        const cell = document.createElement("td");
        cell.textContent = String(v);
        row.appendChild(cell);
      }
      ui.turns.appendChild(row);
    }

    /** A captured quantum: sent in FRAME_SAMPLES frames while streaming. */
    onCaptured(samples) {
      if (this.state !== "streaming") return;
      this.pending.push(samples);
      this.pendingSamples += samples.length;
      if (this.pendingSamples >= FRAME_SAMPLES) this.flush();
    }

    flush() {
      if (!this.pendingSamples || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      const frame = new Float32Array(this.pendingSamples);
      let offset = 0;
      for (const part of this.pending) { frame.set(part, offset); offset += part.length; }
      this.pending = [];
      this.pendingSamples = 0;
      // At most FRAME_SAMPLES per message (a backlog after a stall stays under the
      // server's max_frame_bytes).
      for (let i = 0; i < frame.length; i += FRAME_SAMPLES) {
        this.ws.send(frame.slice(i, i + FRAME_SAMPLES).buffer);
      }
      this.counts.sent += frame.length;
      ui.sent.textContent = String(this.counts.sent);
    }

    /** Stops capture, sends what is left and `end`; `done` then closes the socket. */
    stop() {
      this.stopped = true;
      this.stopCapture();
      if (!this.ws) {                   // stopped before connecting
        this.state = "closed";
        setStatus("stopped");
        sessionEnded();
      } else if (this.state === "streaming" && this.ws.readyState === WebSocket.OPEN) {
        this.flush();
        this.state = "ending";
        this.ws.send(JSON.stringify({ type: "end" }));
        setStatus("finishing");
      } else if (this.ws && this.ws.readyState < WebSocket.CLOSING) {
        this.ws.close(1000, "stopped before ready");
      }
    }

    stopCapture() {
      for (const node of this.nodes) {
        if (node instanceof AudioBufferSourceNode) { node.onended = null; try { node.stop(); } catch (e) { /* not started */ } }
        node.disconnect();
      }
      this.nodes = [];
      if (this.mediaStream) this.mediaStream.getTracks().forEach((t) => t.stop());
      this.mediaStream = null;
      if (this.capture) this.capture.close().catch(() => {});   // once: a second close rejects
      this.capture = null;
    }

    onClose(ev) {
      this.stopCapture();
      if (this.state !== "done" && this.state !== "error") {
        setStatus(`closed before done (code ${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
        if (this.state !== "connecting" || ev.code !== 1000) {
          showError(`the connection closed before the session was done (code ${ev.code})`);
        }
        this.state = "closed";
      }
      if (this.onReady) this.onReady();
      sessionEnded();
    }
  }

  let session = null;

  function sessionEnded() {
    ui.start.disabled = false;
    ui.stop.disabled = true;
    ui.file.disabled = false;
  }

  ui.start.addEventListener("click", async () => {
    if (session && !["done", "error", "closed"].includes(session.state)) return;
    ui.start.disabled = true;
    ui.stop.disabled = false;
    ui.file.disabled = true;
    ui.error.hidden = true;
    ui.error.textContent = "";
    for (const el of [ui.source, ui.translation, ui.turns, ui.summary]) el.textContent = "";
    for (const el of [ui.received, ui.scheduled, ui.played, ui.sent]) el.textContent = "0";
    ui.latency.textContent = "-";
    setStatus("connecting");
    if (session && session.playback) session.playback.close();
    const file = ui.file.files.length ? ui.file.files[0] : null;
    session = new Session(file, ui.transcript.checked);
    window.liveinterpSession = session;   // for debugging from the console
    try {
      await session.start();
    } catch (e) {
      showError(`cannot start: ${e.message || e}`);
      setStatus("error");
      session.state = "error";
      session.stopCapture();
      if (session.ws) session.ws.close();
      sessionEnded();
    }
  });

  ui.stop.addEventListener("click", () => {
    if (session) session.stop();
    ui.stop.disabled = true;
  });
})();
