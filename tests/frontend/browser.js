// Drives ComfyUI's real web frontend in headless Chromium (playwright-core) for check.py.
// usage: node browser.js <config.json>   config: {url, chromium, outDir, workflows: [paths],
//        tiny: {CheckpointLoaderSimple: "LSCTest_TinyCheckpoint"}, fast: {class: {widget: value}},
//        uiErrors: [{workflow, nodeType, widget, value}],
//        followUps: [{workflow, unmute: nodeType, connect: [fromType, fromSlot, toType, toInput]}],
//        historyTimeoutMs, overallTimeoutMs}
// Writes <outDir>/browser_result.json and screenshots; always writes a result, even on a fatal error.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = { frontendVersion: null, console: [], pageErrors: [], failedRequests: [], nodeDefs: {}, negativeControl: null,
              workflows: {}, fatal: null };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const save = () => fs.writeFileSync(path.join(config.outDir, 'browser_result.json'), JSON.stringify(out, null, 1));

// Text of visible dialogs (PrimeVue) — the "missing node types" / "missing models" warnings and error dialogs.
async function dialogs(page) {
  return page.evaluate(() => [...document.querySelectorAll('.p-dialog, [role="dialog"], [role="alertdialog"]')]
    .filter((d) => d.offsetParent !== null || d.getClientRects().length)
    .map((d) => d.innerText.replace(/\s+/g, ' ').trim().slice(0, 600)));
}

async function closeDialogs(page) {
  for (let i = 0; i < 5 && (await dialogs(page)).length; i++) {
    await page.keyboard.press('Escape');
    await sleep(300);
  }
  // Toasts stay over the canvas in screenshots; clear them.
  await page.evaluate(() => document.querySelectorAll('.p-toast-close-button').forEach((b) => b.click()));
}

// Loads a workflow the way a user dropping the file on the canvas does (document-level drop handler -> handleFile).
async function dropWorkflow(page, name, text, expectedNodes) {
  await page.evaluate(({ name, text }) => {
    const dt = new DataTransfer();
    dt.items.add(new File([text], name, { type: 'application/json' }));
    const target = document.querySelector('#graph-canvas') || document.body;
    target.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, { name, text });
  try {
    await page.waitForFunction((n) => window.app.graph.nodes.length === n, expectedNodes, { timeout: 15000 });
    return 'file drop event';
  } catch (e) {
    await page.evaluate((t) => window.app.loadGraphData(JSON.parse(t)), text);
    return 'app.loadGraphData (drop did not load the graph)';
  }
}

async function fitAndShoot(page, file) {
  await page.evaluate(() => {
    const c = window.app.canvas, nodes = window.app.graph.nodes;
    if (!nodes.length) return;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of nodes) {
      const title = window.LiteGraph.NODE_TITLE_HEIGHT || 30;
      x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
      x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
    }
    const el = c.canvas, W = el.clientWidth || el.width, H = el.clientHeight || el.height;
    const s = Math.min(W / (x1 - x0 + 80), H / (y1 - y0 + 80), 1.5);
    c.ds.scale = s;
    c.ds.offset[0] = W / (2 * s) - (x0 + x1) / 2;
    c.ds.offset[1] = H / (2 * s) - (y0 + y1) / 2;
    c.setDirty(true, true);
  });
  await sleep(800);
  await page.screenshot({ path: file });
}

// Per node: registered type? drawn as an error (red)? The frontend creates unknown types as placeholder nodes with
// has_errors and the original serialisation kept in last_serialization.
async function nodeReport(page) {
  return page.evaluate(() => window.app.graph.nodes.map((n) => ({
    id: n.id, type: n.type, title: n.title, mode: n.mode,
    registered: n.type in window.LiteGraph.registered_node_types,
    hasErrors: !!n.has_errors, placeholder: !!n.last_serialization,
    color: n.color || null, bgcolor: n.bgcolor || null,
    widgets: (n.widgets || []).map((w) => [w.name, w.value]),
  })));
}

// Replace every loader node by the tiny test checkpoint (same outputs) and shrink sizes/steps, as the pack's tests
// do with TINY and FAST. Returns a description of what changed.
async function swapInGraph(page, tiny, fast) {
  return page.evaluate(({ tiny, fast }) => {
    const { app, LiteGraph } = window, g = app.graph, done = [];
    for (const old of [...g.nodes]) {
      const to = tiny[old.type];
      if (!to) continue;
      const repl = LiteGraph.createNode(to);
      repl.pos = [old.pos[0], old.pos[1]];
      g.add(repl);
      (old.outputs || []).forEach((output, slot) => {
        for (const linkId of [...(output.links || [])]) {
          const link = g.links.get ? g.links.get(linkId) : g.links[linkId];
          if (link) repl.connect(slot, g.getNodeById(link.target_id), link.target_slot);
        }
      });
      g.remove(old);
      done.push(`${old.type} #${old.id} -> ${to} #${repl.id}`);
    }
    for (const n of g.nodes) {
      for (const [name, value] of Object.entries((fast || {})[n.type] || {})) {
        const w = (n.widgets || []).find((x) => x.name === name);
        if (w) { w.value = value; done.push(`${n.type} #${n.id}.${name} = ${value}`); }
      }
    }
    g.setDirtyCanvas(true, true);
    return done;
  }, { tiny, fast });
}

async function history(page, promptId, timeoutMs) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const h = await page.evaluate(async (id) => (await fetch(`/api/history/${id}`)).json(), promptId);
    if (h[promptId] && h[promptId].status && h[promptId].status.completed !== undefined &&
        (h[promptId].status.status_str === 'success' || h[promptId].status.status_str === 'error')) return h[promptId];
    await sleep(500);
  }
  return null;
}

(async () => {
  const browser = await chromium.launch({ executablePath: config.chromium, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const killTimer = setTimeout(() => { out.fatal = 'browser.js overall timeout'; save(); process.exit(3); },
                               config.overallTimeoutMs);
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.setDefaultTimeout(30000);
    page.on('console', (m) => { if (['error', 'warning'].includes(m.type())) out.console.push(`${m.type()}: ${m.text().slice(0, 400)}`); });
    page.on('pageerror', (e) => out.pageErrors.push(String(e && e.stack || e).slice(0, 800)));
    page.on('response', (r) => { if (r.status() >= 400) out.failedRequests.push(`${r.status()} ${r.request().method()} ${r.url()}`); });

    await page.goto(config.url, { timeout: 60000 });
    await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph &&
      Object.keys(window.LiteGraph.registered_node_types || {}).some((t) => t.startsWith('LSC_')), null, { timeout: 90000 });
    await sleep(1500);
    await closeDialogs(page);
    out.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || null);

    // What the frontend knows about the pack's nodes (from /object_info): labels, description, tooltips.
    out.nodeDefs = await page.evaluate(() => {
      const r = {};
      for (const [type, cls] of Object.entries(window.LiteGraph.registered_node_types)) {
        if (!type.startsWith('LSC_')) continue;
        const d = cls.nodeData || {};
        const inputs = {};
        for (const section of ['required', 'optional']) {
          for (const [name, spec] of Object.entries((d.input || {})[section] || {})) inputs[name] = (spec[1] || {}).tooltip || null;
        }
        r[type] = { display_name: d.display_name, category: d.category, description: d.description || null,
                    python_module: d.python_module, inputs, outputs: d.output_name,
                    output_tooltips: d.output_tooltips || null };
      }
      return r;
    });

    // Negative control: an unknown node type must be detected by the same checks (else the checks prove nothing).
    {
      const wf = { last_node_id: 1, last_link_id: 0, nodes: [{ id: 1, type: 'LSC_DoesNotExist', pos: [100, 100],
        size: [200, 60], flags: {}, order: 0, mode: 0, inputs: [], outputs: [], properties: {}, widgets_values: [] }],
        links: [], groups: [], config: {}, extra: {}, version: 0.4 };
      const how = await dropWorkflow(page, 'negative_control.json', JSON.stringify(wf), 1);
      await sleep(1500);
      out.negativeControl = { how, dialogs: await dialogs(page), nodes: await nodeReport(page) };
      await closeDialogs(page);
    }

    for (const file of config.workflows) {
      const name = path.basename(file), stem = name.replace(/\.json$/, '');
      const text = fs.readFileSync(file, 'utf8'), wf = JSON.parse(text);
      const r = out.workflows[name] = {};
      try {
        await closeDialogs(page);
        r.loadedBy = await dropWorkflow(page, name, text, wf.nodes.length);
        await sleep(1500);
        r.dialogs = await dialogs(page);
        r.nodes = await nodeReport(page);
        r.nodeCountFile = wf.nodes.length;
        r.linkCountFile = wf.links.length;
        r.linkCountGraph = await page.evaluate(() => { const l = window.app.graph.links; return l.size !== undefined ? l.size : Object.keys(l).length; });
        await closeDialogs(page);
        r.screenshot = path.join(config.outDir, `${stem}.png`);
        await fitAndShoot(page, r.screenshot);
        const p = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
        r.prompt = JSON.parse(JSON.stringify(p));

        r.swaps = await swapInGraph(page, config.tiny, config.fast);
        const queued = page.waitForResponse((res) => res.url().endsWith('/api/prompt') && res.request().method() === 'POST',
                                            { timeout: 30000 });
        await page.evaluate(() => { window.app.queuePrompt(0, 1); });
        const res = await queued;
        r.queuedPrompt = JSON.parse(res.request().postData()).prompt;
        r.queueResponse = { status: res.status(), body: await res.json().catch(() => null) };
        const pid = r.queueResponse.body && r.queueResponse.body.prompt_id;
        if (pid) {
          const h = await history(page, pid, config.historyTimeoutMs);
          r.history = h ? { status: h.status, outputs: h.outputs } : null;
          await sleep(1500);  // let previews reach the canvas
        }
        r.dialogsAfterQueue = await dialogs(page);
        r.nodesAfterQueue = (await nodeReport(page)).filter((n) => n.hasErrors);
        await closeDialogs(page);
        r.screenshotAfterRun = path.join(config.outDir, `${stem}.after_run.png`);
        await fitAndShoot(page, r.screenshotAfterRun);

        // What a workflow's Note asks after the first run: unmute a node, connect it, queue again.
        const follow = (config.followUps || []).find((c) => c.workflow === name);
        if (follow) {
          const f = r.followUp = { ...follow };
          f.done = await page.evaluate(({ unmute, connect }) => {
            const g = window.app.graph, byType = (t) => g.nodes.find((x) => x.type === t);
            const muted = byType(unmute), from = byType(connect[0]), to = byType(connect[2]);
            if (!muted || !from || !to) return false;
            muted.mode = 0;
            from.connect(connect[1], to, to.findInputSlot(connect[3]));
            g.setDirtyCanvas(true, true);
            return true;
          }, follow);
          const p = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
          f.prompt = JSON.parse(JSON.stringify(p));
          const queued3 = page.waitForResponse((res) => res.url().endsWith('/api/prompt') && res.request().method() === 'POST',
                                               { timeout: 30000 });
          await page.evaluate(() => { window.app.queuePrompt(0, 1); });
          const res3 = await queued3;
          f.queueResponse = { status: res3.status(), body: await res3.json().catch(() => null) };
          const pid3 = f.queueResponse.body && f.queueResponse.body.prompt_id;
          const h3 = pid3 ? await history(page, pid3, config.historyTimeoutMs) : null;
          f.history = h3 ? { status: h3.status, outputs: h3.outputs } : null;
          await sleep(1500);
          f.dialogs = await dialogs(page);
          f.redNodes = (await nodeReport(page)).filter((x) => x.hasErrors).map((x) => `#${x.id} ${x.type}`);
          await closeDialogs(page);
          f.screenshot = path.join(config.outDir, `${stem}.follow_up.png`);
          await fitAndShoot(page, f.screenshot);
        }

        // How a user sees a pack error: set a bad widget value in this graph, queue, read the error dialog.
        const bad = config.uiErrors.find((c) => c.workflow === name);
        if (bad) {
          const set = await page.evaluate(({ nodeType, widget, value }) => {
            const node = window.app.graph.nodes.find((x) => x.type === nodeType);
            const w = node && (node.widgets || []).find((x) => x.name === widget);
            if (!w) return false;
            w.value = value; window.app.graph.setDirtyCanvas(true, true); return true;
          }, bad);
          const u = r.uiError = { ...bad, set };
          const queued2 = page.waitForResponse((res) => res.url().endsWith('/api/prompt') && res.request().method() === 'POST',
                                               { timeout: 30000 });
          await page.evaluate(() => { window.app.queuePrompt(0, 1); });
          const res2 = await queued2;
          const pid2 = ((await res2.json().catch(() => null)) || {}).prompt_id;
          const h2 = pid2 ? await history(page, pid2, 120000) : null;
          u.status = h2 && h2.status.status_str;
          await page.waitForFunction(() => [...document.querySelectorAll('.p-dialog, [role="dialog"]')].length > 0,
                                     null, { timeout: 10000 }).catch(() => {});
          await sleep(1000);
          u.dialogs = await dialogs(page);
          u.redNodes = (await nodeReport(page)).filter((x) => x.hasErrors).map((x) => `#${x.id} ${x.type}`);
          u.screenshot = path.join(config.outDir, `${stem}.ui_error.png`);
          await page.screenshot({ path: u.screenshot });
          await closeDialogs(page);
        }
      } catch (e) {
        r.error = String(e && e.stack || e).slice(0, 2000);
      }
      save();
    }

    // Every pack node side by side, as added from the node library (default widget values), in rows on a viewport
    // large enough that the canvas draws them in full detail. Fresh node ids: no earlier run's previews on them.
    await page.setViewportSize({ width: 2400, height: 1500 });
    await page.evaluate(() => {
      const { app, LiteGraph } = window;
      app.graph.clear();
      let x = 40, y = 40, rowHeight = 0;
      Object.keys(LiteGraph.registered_node_types).filter((t) => t.startsWith('LSC_')).sort().forEach((t, i) => {
        const n = LiteGraph.createNode(t);
        if (x + n.size[0] > 2200) { x = 40; y += rowHeight + 80; rowHeight = 0; }
        n.id = 10000 + i; n.pos = [x, y]; app.graph.add(n);
        x += n.size[0] + 40; rowHeight = Math.max(rowHeight, n.size[1]);
      });
    });
    out.galleryScreenshot = path.join(config.outDir, 'pack_nodes.png');
    await fitAndShoot(page, out.galleryScreenshot);
  } catch (e) {
    out.fatal = String(e && e.stack || e).slice(0, 2000);
  } finally {
    clearTimeout(killTimer);
    save();
    await browser.close().catch(() => {});
  }
})();
