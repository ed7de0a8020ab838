"""The portal in a real browser: Playwright driving Debian's Chromium (headless, WebGL by
SwiftShader for Aladin Lite) against the demo server. Runs an ADQL query and sees the table
and a plot, searches the table browser, opens the sky view with the HiPS and the catalog
and footprint overlays, makes a SODA cutout from an image search, plots a light curve,
signs in through the demo's OpenID provider, reads the private history, uploads to the
user's own space and makes a token, and opens the schedule page. Screenshots go to ASTER_TEST_SCREENSHOTS."""
import os

import pytest
import pyvo
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader"]


@pytest.fixture(scope="module")
def browser():
    assert os.path.exists(CHROMIUM), "scripts/setup installs Debian's chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    yield page
    context.close()


def shot(page, name):
    out = os.environ.get("ASTER_TEST_SCREENSHOTS")
    if out:
        os.makedirs(out, exist_ok=True)
        page.screenshot(path=os.path.join(out, f"portal-{name}.png"))


def canvas_ink(page, selector):
    """How many pixels of a 2D canvas are drawn on."""
    return page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")


def test_a_query_gives_a_sortable_table_a_plot_and_downloads(page, base_url):
    page.goto(base_url + "/")
    expect(page.locator("#table-list [data-table='dp.Object']")).to_be_visible(timeout=30000)
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("rows in", timeout=60000)
    rows = page.locator("#table tbody tr")
    expect(rows).to_have_count(50)
    assert "page 1 of 10" in page.inner_text("#page")
    # Sorting by r (ascending) puts the brightest first.
    header = page.locator("#table th", has_text="r").last
    header.click()
    first = float(page.locator("#table tbody tr").first.locator("td").nth(4).inner_text())
    second = float(page.locator("#table tbody tr").nth(1).locator("td").nth(4).inner_text())
    assert first <= second
    assert canvas_ink(page, "#plot") > 500
    page.select_option("#plot-kind", "sky")
    assert canvas_ink(page, "#plot") > 500
    formats = page.locator("#downloads a")
    expect(formats).to_have_count(6)
    href = formats.nth(1).get_attribute("href")
    assert "RESPONSEFORMAT=csv" in href
    shot(page, "query")
    assert not page.errors, page.errors


def test_bad_adql_is_reported_in_the_page(page, base_url):
    page.goto(base_url + "/")
    page.fill("#adql", "SELECT FROM WHERE")
    page.click("#run")
    expect(page.locator("#status.error")).to_be_visible(timeout=30000)
    assert page.inner_text("#status").strip()


def test_the_table_browser_searches_descriptions(page, base_url):
    page.goto(base_url + "/")
    expect(page.locator("#table-list li").first).to_be_visible(timeout=30000)
    # Full text (the archive's tantivy index): words of names and descriptions.
    page.fill("#table-search", "dia object")
    expect(page.locator("#table-list [data-table='ap.DiaSource']")).to_be_visible()
    expect(page.locator("#table-list [data-table='dp.Visit']")).to_have_count(0)
    page.locator("#table-list [data-table='ap.DiaSource'] .col", has_text="diaObjectId").first.click()
    assert "diaObjectId" in page.input_value("#adql")


def test_the_sky_view_shows_the_hips_with_overlays(page, base_url):
    tiles = []
    page.on("response", lambda r: tiles.append((r.url, r.status)) if "/hips/" in r.url else None)
    page.goto(base_url + "/#sky")
    expect(page.locator("#sky-status")).to_contain_text("objects", timeout=90000)
    status = page.inner_text("#sky-status")
    footprints, objects = int(status.split()[0]), int(status.split(",")[1].split()[0])
    assert footprints > 0 and objects > 0, status
    page.wait_for_timeout(3000)
    images = [u for u, s in tiles if "/hips/deep-color/" in u and s == 200 and
              (u.endswith(".jpg") or u.endswith(".png"))]
    assert images, tiles[:20]
    assert any("/hips/dp-object/" in u for u, s in tiles if s == 200)
    expect(page.locator("#aladin canvas").first).to_be_visible()
    shot(page, "sky")
    # A captioned picture of the view.
    with page.context.expect_page() as popup:
        page.click("#sky-picture")
    picture = popup.value
    expect(picture.locator("figcaption")).to_contain_text("Aster deep coadds")
    picture.wait_for_function("document.querySelector('img').naturalWidth > 0")
    shot(picture, "picture")
    assert not page.errors, page.errors


def test_an_image_search_gives_previews_and_a_cutout(page, base_url):
    page.goto(base_url + "/#images")
    page.click("#sia-form button")
    expect(page.locator("#sia-status")).to_contain_text("images", timeout=30000)
    cards = page.locator(".card")
    assert cards.count() > 0
    with page.expect_response(lambda r: "/soda/sync" in r.url) as resp:
        cards.first.locator("button.cut").click()
    assert resp.value.status == 200
    assert resp.value.headers["content-type"] == "image/png"
    page.wait_for_function("document.querySelector('#cutout-img').naturalWidth > 0")
    assert "/soda/sync?" in page.get_attribute("#cutout-fits", "href")
    shot(page, "cutout")


def test_a_light_curve_is_plotted(page, base_url, tap_url):
    obj = pyvo.dal.TAPService(tap_url).search(
        "SELECT TOP 1 diaObjectId FROM ap.DiaSource GROUP BY diaObjectId "
        "ORDER BY COUNT(*) DESC").to_table()["diaObjectId"][0]
    page.goto(base_url + "/")
    page.click("#lightcurve-box summary")
    page.fill("#dia-id", str(obj))
    page.click("#dia-go")
    page.wait_for_timeout(1500)
    assert canvas_ink(page, "#lightcurve") > 300


def test_a_periodic_dia_object_is_folded_on_its_period(page, base_url, tap_url):
    """The demo's night goes on from a season of short nights: DIAObjects there have a
    Lomb-Scargle period, shown under the light curve, which the forced photometry is folded
    on."""
    tap = pyvo.dal.TAPService(tap_url)
    # Of the newest versions (after the last night), the likeliest period.
    newest = float(tap.search(
        "SELECT MAX(validityStartMjdTai) AS m FROM ap.DiaObject").to_table()["m"][0])
    t = tap.search(
        "SELECT TOP 1 diaObjectId, lombScarglePeriod FROM ap.DiaObject "
        f"WHERE lombScarglePeriod IS NOT NULL AND validityStartMjdTai = {newest!r} "
        "ORDER BY lombScarglePower DESC").to_table()
    assert len(t) == 1, "no DIAObject of the demo has a period"
    obj, period = t["diaObjectId"][0], float(t["lombScarglePeriod"][0])
    page.goto(base_url + "/")
    page.click("#lightcurve-box summary")
    page.fill("#dia-id", str(obj))
    page.check("#dia-fold")
    page.click("#dia-go")
    page.wait_for_function("document.querySelector('#dia-period').textContent.startsWith('period')")
    shown = float(page.inner_text("#dia-period").split()[1])
    assert abs(shown - period) <= 1e-5 * period
    page.wait_for_timeout(1500)
    assert canvas_ink(page, "#lightcurve") > 300
    shot(page, "folded-light-curve")


def test_a_dia_objects_nearby_objects_are_listed(page, base_url, tap_url):
    m = pyvo.dal.TAPService(tap_url).search(
        "SELECT TOP 1 diaObjectId, COUNT(*) AS n FROM ap.DiaObject_To_Object_Match "
        "GROUP BY diaObjectId ORDER BY n DESC").to_table()
    obj, n = m["diaObjectId"][0], int(m["n"][0])
    page.goto(base_url + "/")
    page.click("#lightcurve-box summary")
    page.fill("#dia-id", str(obj))
    page.click("#dia-go")
    page.wait_for_function(f"document.querySelectorAll('#nearby tr').length == {n + 1}")
    kinds = page.locator("#nearby td:nth-child(2)").all_inner_texts()
    assert set(kinds) <= {"star", "galaxy"} and len(kinds) == n
    shot(page, "nearby-objects")


def sign_in(page, base_url, user):
    """Signs in through the demo's OpenID provider, as a user would: the Sign in link, then
    the provider's page."""
    page.goto(base_url + "/")
    page.click("#sign-in")
    page.click(f"#user-{user}")
    expect(page.locator("#account-name")).to_have_text(user, timeout=30000)


def test_history_is_private_and_shows_after_sign_in(page, base_url):
    page.goto(base_url + "/#history")
    expect(page.locator("#history-note")).to_contain_text("sign in", timeout=30000)
    sign_in(page, base_url, "carol")
    page.fill("#adql", "SELECT TOP 3 objectId FROM dp.Object")
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("rows in", timeout=60000)
    page.click("nav button[data-tab='history']")
    expect(page.locator("#history td.q").first).to_have_text("SELECT TOP 3 objectId FROM dp.Object", timeout=30000)
    shot(page, "history")
    page.locator("#history td.q").first.click()
    expect(page.locator("#tab-query")).to_be_visible()


def test_my_space_uploads_and_makes_tokens(page, base_url, tmp_path):
    sign_in(page, base_url, "carol")
    page.click("nav button[data-tab='space']")
    expect(page.locator("#space-path")).to_have_text("/carol", timeout=30000)
    f = tmp_path / "notes-from-the-portal.txt"
    f.write_text("observing notes\n")
    page.set_input_files("#space-file", str(f))
    page.click("#space-upload")
    expect(page.locator("#space-list")).to_contain_text("notes-from-the-portal.txt", timeout=30000)
    page.fill("#token-label", "portal-test")
    page.click("#token-make")
    expect(page.locator("#token-new")).to_contain_text("aster_", timeout=30000)
    expect(page.locator("#token-list")).to_contain_text("portal-test")
    shot(page, "my-space")


def test_schedule_page(page, base_url):
    page.goto(base_url + "/")
    page.click("#schedule-link")
    expect(page.locator("h1")).to_have_text("Predicted visit schedule")
    shot(page, "schedule")
