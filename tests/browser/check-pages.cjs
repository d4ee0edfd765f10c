// Drives safetel's dashboard in a real headless Chromium (Playwright, Debian's chromium) and
// checks every page: it loads with status 200 and no console or page errors, its charts have
// marks drawn, and every number tied to the API (data-api="/json/pointer") equals the value in
// the page's own JSON (body[data-api-url]) to the decimals shown. Also searches the vehicle page
// through its form, and follows the links to one vehicle's and one cohort's pages (from the
// ranking, the summary's open regressions and the regressions' episodes). Prints one JSON line per page; exits 1 with the reasons on any failure.
//
//   node tests/browser/check-pages.cjs http://127.0.0.1:PORT
// Env: SAFETEL_PLAYWRIGHT (path of the playwright-core package), SAFETEL_CHROMIUM (browser).

const { chromium } = require(process.env.SAFETEL_PLAYWRIGHT || 'playwright-core');

const base = process.argv[2];
if (!base) {
  console.error('usage: check-pages.cjs BASE_URL');
  process.exit(2);
}

// Path -> charts the page must show (each with at least one mark drawn).
const PAGES = [
  ['/', 2],
  ['/regressions', 1],
  ['/rare-events', 3],
  ['/vehicles', 1],
  ['/diagnostics', 4],
];

const failures = [];
const fail = (page, message) => failures.push(`${page}: ${message}`);

function pointer(json, path) {
  return path
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((value, key) => (value == null ? undefined : value[key]), json);
}

async function checkPage(context, path, expectedCharts) {
  const page = await context.newPage();
  const errors = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`page error: ${err.message}`));
  page.on('requestfailed', (req) => errors.push(`request failed: ${req.url()}`));
  const response = await page.goto(base + path, { waitUntil: 'load' });
  if (!response || response.status() !== 200) {
    fail(path, `status ${response && response.status()}`);
  }
  const result = await inspect(page, path, expectedCharts);
  for (const e of errors) fail(path, e);
  await page.close();
  return result;
}

async function inspect(page, path, expectedCharts) {
  const charts = await page.$$eval('svg.chart', (svgs) =>
    svgs.map((svg) => ({
      name: svg.getAttribute('data-chart'),
      marks: svg.querySelectorAll('polyline, rect.bar, circle.point, path.band').length,
      width: svg.getBoundingClientRect().width,
    })),
  );
  if (charts.length < expectedCharts) {
    fail(path, `${charts.length} charts, expected at least ${expectedCharts}`);
  }
  for (const chart of charts) {
    if (chart.marks === 0) fail(path, `chart ${chart.name} draws nothing`);
    if (chart.width < 100) fail(path, `chart ${chart.name} is ${chart.width}px wide`);
  }
  const apiUrl = await page.getAttribute('body', 'data-api-url');
  if (!apiUrl) {
    fail(path, 'no data-api-url on body');
    return { path, charts: charts.length, numbers: 0 };
  }
  const apiResponse = await page.request.get(base + apiUrl);
  if (apiResponse.status() !== 200) fail(path, `API ${apiUrl} answered ${apiResponse.status()}`);
  const api = await apiResponse.json();
  const numbers = await page.$$eval('[data-api]', (els) =>
    els.map((el) => ({ pointer: el.getAttribute('data-api'), text: el.textContent.trim() })),
  );
  let checked = 0;
  for (const { pointer: at, text } of numbers) {
    const expected = pointer(api, at);
    const shown = Number(text);
    if (typeof expected !== 'number' || !Number.isFinite(shown)) {
      fail(path, `${at}: page shows "${text}", API has ${JSON.stringify(expected)}`);
      continue;
    }
    const decimals = (text.split('.')[1] || '').length;
    const tolerance = 0.5 * 10 ** -decimals + 1e-9 * Math.abs(expected);
    if (Math.abs(shown - expected) > tolerance) {
      fail(path, `${at}: page shows ${text}, API has ${expected}`);
    }
    checked += 1;
  }
  if (checked < 3) fail(path, `only ${checked} numbers tied to the API`);
  return { path, api: apiUrl, charts: charts.length, numbers: checked };
}

async function searchVehicles(context) {
  const page = await context.newPage();
  await page.goto(base + '/vehicles', { waitUntil: 'load' });
  const firstId = await page.$eval('table[data-table="ranking"] tbody tr td:nth-child(2)', (td) =>
    td.textContent.trim(),
  );
  const fragment = firstId.slice(-3);
  await page.fill('input[name="q"]', fragment);
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type="submit"]')]);
  const ids = await page.$$eval('table[data-table="ranking"] tbody tr td:nth-child(2)', (tds) =>
    tds.map((td) => td.textContent.trim()),
  );
  if (ids.length === 0) fail('/vehicles search', `no rows for "${fragment}"`);
  for (const id of ids) {
    if (!id.includes(fragment)) fail('/vehicles search', `row ${id} does not contain "${fragment}"`);
  }
  if (!ids.includes(firstId)) fail('/vehicles search', `${firstId} missing from its own search`);
  const result = await inspect(page, `/vehicles?q=${fragment}`, 1);
  await page.close();
  return { ...result, search: fragment, rows: ids.length };
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.SAFETEL_CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const context = await browser.newContext();
    for (const [path, charts] of PAGES) {
      console.log(JSON.stringify(await checkPage(context, path, charts)));
    }
    // The newest episode's own page, reached through its link on the regressions page.
    const page = await context.newPage();
    await page.goto(base + '/regressions', { waitUntil: 'load' });
    const link = await page.$('table[data-table="episodes"] a');
    if (link) {
      const href = await link.getAttribute('href');
      console.log(JSON.stringify(await checkPage(context, href, 4)));
    } else {
      fail('/regressions', 'no episode to open');
    }
    // A cohort's page, through the kind link of a cohort episode on the regressions page.
    const cohortLink = await page.$('table[data-table="episodes"] a[href^="/cohorts/"]');
    if (cohortLink) {
      console.log(JSON.stringify(await checkPage(context, await cohortLink.getAttribute('href'), 4)));
    } else {
      fail('/regressions', 'no cohort episode links to its cohort page');
    }
    await page.close();
    // The top-ranked vehicle's page through the ranking's link, and the vehicle page of an open
    // regression through the summary's link: each with the exposure chart and two per class.
    const ranking = await context.newPage();
    await ranking.goto(base + '/vehicles', { waitUntil: 'load' });
    const vehicleLink = await ranking.$('table[data-table="ranking"] tbody tr a[href^="/vehicles/"]');
    if (vehicleLink) {
      console.log(JSON.stringify(await checkPage(context, await vehicleLink.getAttribute('href'), 5)));
    } else {
      fail('/vehicles', 'the ranking links to no vehicle page');
    }
    await ranking.close();
    const summary = await context.newPage();
    await summary.goto(base + '/', { waitUntil: 'load' });
    const openLink = await summary.$('table[data-table="open-episodes"] a[href^="/vehicles/"]');
    if (openLink) {
      const href = await openLink.getAttribute('href');
      const result = await checkPage(context, href, 5);
      console.log(JSON.stringify({ ...result, from: '/' }));
    } else {
      fail('/', 'no open regression links to a vehicle page');
    }
    await summary.close();
    console.log(JSON.stringify(await searchVehicles(context)));
  } finally {
    await browser.close();
  }
  if (failures.length > 0) {
    console.error(failures.join('\n'));
    process.exit(1);
  }
})().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
