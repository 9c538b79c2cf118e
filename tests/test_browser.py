"""The page in a real browser: Debian's headless Chromium driven by Playwright (no ``playwright install``).

Upload a thumbnail and get a hybrid gallery; pick a catalog item; click a result and explore from it;
filter by a metadata dropdown; page on with More; ask for a session basket; hide a result with
"less like this"; a bad query shows a message; the page fits a phone screen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .synthetic import CHANNELS, jpeg_bytes, thumbnail

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: Browser, url: str) -> Iterator[Page]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("#banner")).to_contain_text("32 videos")
    yield page
    page.close()


def table_rows(page: Page, count: int = 8) -> list[dict]:
    """Rows of the details table as dicts (header -> cell text), once it shows ``count`` results."""
    rows = page.locator("#details [role=row]")
    expect(rows).to_have_count(count + 1)  # the header row, then one per result
    headers = [text.strip() for text in rows.first.locator("[role=columnheader]").all_inner_texts()]
    return [dict(zip(headers, (text.strip() for text in row.locator("[role=gridcell]").all_inner_texts())))
            for row in rows.all()[1:]]


def test_upload_a_thumbnail_in_hybrid_mode(page: Page, tmp_path: Path, bundle_dir: Path) -> None:
    alpha = json.loads((bundle_dir / "manifest.json").read_text())["search"]["alpha"]
    style = CHANNELS["Tech Reviews"]
    query = tmp_path / "query.jpg"
    query.write_bytes(jpeg_bytes(thumbnail(style["colour"], style["shape"], seed=3, letterbox=True)))
    page.locator("#query-image input[type=file]").set_input_files(query)
    page.locator("#query-title textarea").fill("phone review")
    page.locator("#mode").get_by_text("hybrid", exact=True).click()
    page.locator("#recommend-button").click()
    expect(page.locator("#results-gallery .thumbnail-item")).to_have_count(8)
    expect(page.locator("#summary")).to_contain_text("8 recommendations for thumbnail query.jpg and title phone review")
    expect(page.locator("#summary")).to_contain_text(f"hybrid, α = {alpha:.2f}")
    assert [row["#"] for row in table_rows(page)] == [str(rank) for rank in range(1, 9)]


def test_pick_a_catalog_item_then_wander_from_a_result(page: Page) -> None:
    page.get_by_role("tab", name="Pick from the catalog").click()
    first = page.locator("#catalog-gallery .thumbnail-item").first
    picked_title = first.locator("img").get_attribute("alt")
    first.click()
    expect(page.locator("#summary")).to_contain_text(f"catalog video {picked_title}")
    expect(page.locator("#results-gallery .thumbnail-item")).to_have_count(8)
    picked_id = page.locator("#item-id textarea").input_value()
    assert picked_id and picked_id not in item_ids(page)

    second = table_rows(page)[1]
    next_id, next_title = second["item id"], second["title"]
    page.locator("#results-gallery .thumbnail-item").nth(1).click()
    expect(page.locator("#selected-text")).to_contain_text(next_title)
    page.locator("#explore-button").click()
    expect(page.locator("#item-id textarea")).to_have_value(next_id)
    expect(page.locator("#summary")).to_contain_text(f"catalog video {next_title}")
    expect(page.locator("#item-text")).to_contain_text(next_title)
    expect(page.locator("#details [role=row]").nth(1)).not_to_contain_text(next_id)
    assert next_id not in item_ids(page)


def item_ids(page: Page) -> list[str]:
    return [row["item id"] for row in table_rows(page)]


def ask_for_titles(page: Page, title: str, k: int | None = None) -> None:
    page.locator("#query-title textarea").fill(title)
    page.locator("#mode").get_by_text("text", exact=True).click()
    if k is not None:
        page.locator("#k input[type=number]").fill(str(k))
        page.locator("#k input[type=number]").press("Enter")
    page.locator("#recommend-button").click()


def select_result(page: Page, index: int) -> None:
    page.locator("#results-gallery .thumbnail-item").nth(index).click()
    expect(page.locator("#selected-actions")).to_be_visible()


def test_a_filter_dropdown_keeps_only_that_channel(page: Page) -> None:
    page.get_by_role("combobox", name="channel").click()
    page.get_by_role("option", name="Crafts", exact=True).click()
    page.keyboard.press("Escape")
    ask_for_titles(page, "phone review")
    expect(page.locator("#summary")).to_contain_text("only channel Crafts")
    assert {row["channel"] for row in table_rows(page)} == {"Crafts"}  # 8 results, all of the 8 Crafts videos


def test_more_appends_the_next_page(page: Page) -> None:
    ask_for_titles(page, "paper crafts", k=3)
    first = item_ids_of(table_rows(page, 3))
    page.locator("#more-button").click()
    rows = table_rows(page, 6)
    assert item_ids_of(rows)[:3] == first and len(set(item_ids_of(rows))) == 6
    assert [row["#"] for row in rows] == [str(rank) for rank in range(1, 7)]
    expect(page.locator("#results-gallery .thumbnail-item")).to_have_count(6)


def test_a_session_basket(page: Page) -> None:
    ask_for_titles(page, "paper crafts")
    rows = table_rows(page)
    chosen = [rows[0], rows[2]]
    for index in (0, 2):
        select_result(page, index)
        page.locator("#add-to-session").click()
    expect(page.locator("#session-text")).to_contain_text("2 videos")
    page.locator("#session-button").click()
    expect(page.locator("#summary")).to_contain_text(
        f"a session of 2 videos ({chosen[0]['title']} and {chosen[1]['title']})")
    assert not {row["item id"] for row in chosen} & set(item_ids(page))
    page.locator("#clear-session").click()
    expect(page.locator("#session")).to_be_hidden()


def test_less_like_this_hides_a_result_until_shown_again(page: Page) -> None:
    ask_for_titles(page, "paper crafts")
    hidden = table_rows(page)[0]["item id"]
    select_result(page, 0)
    page.locator("#less-like-this").click()
    expect(page.locator("#hidden-text")).to_contain_text("1 video hidden")
    expect(page.locator("#summary")).to_contain_text("1 hidden")
    assert hidden not in item_ids(page)
    page.locator("#show-hidden").click()
    expect(page.locator("#hidden-row")).to_be_hidden()
    expect(page.locator("#details [role=row]").nth(1)).to_contain_text(hidden)


def item_ids_of(rows: list[dict]) -> list[str]:
    return [row["item id"] for row in rows]


def test_search_then_a_bad_query_shows_a_message(page: Page) -> None:
    page.get_by_role("tab", name="Pick from the catalog").click()
    page.locator("#catalog-search textarea").fill("paper")
    page.locator("#catalog-search textarea").press("Enter")
    expect(page.locator("#catalog-gallery .thumbnail-item")).to_have_count(5)
    page.get_by_role("tab", name="Upload or type").click()
    page.locator("#mode").get_by_text("text", exact=True).click()
    page.locator("#recommend-button").click()
    expect(page.get_by_text("Text mode needs a title.")).to_be_visible()


def test_alpha_only_shows_in_hybrid_mode(page: Page) -> None:
    expect(page.locator("#alpha")).to_be_visible()
    page.locator("#mode").get_by_text("image", exact=True).click()
    expect(page.locator("#alpha")).to_be_hidden()


def test_fits_a_phone_screen(browser: Browser, url: str) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("#banner")).to_contain_text("32 videos")
    page.locator("#query-title textarea").fill("paper crafts")
    page.locator("#mode").get_by_text("text", exact=True).click()
    page.locator("#recommend-button").click()
    expect(page.locator("#results-gallery .thumbnail-item")).to_have_count(8)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"page is {overflow}px wider than the phone"
    boxes = [page.locator(selector).bounding_box() for selector in ("#recommend-button", "#results-gallery")]
    assert all(box and box["width"] <= 390 for box in boxes)
    page.locator("#results-gallery .thumbnail-item").first.click()
    for selector in ("#explore-button", "#add-to-session", "#less-like-this"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    width = page.locator("#results-gallery .thumbnail-item").first.bounding_box()["width"]
    assert width >= 120, f"result thumbnails are {width:.0f}px wide on a phone"
    assert re.search(r"\d", page.locator("#results-gallery .caption-label").first.inner_text())
    page.close()
