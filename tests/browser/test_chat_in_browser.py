"""The chat panels in a real browser: JupyterLab (and Notebook 7) in headless
Chromium, a line typed into one panel, seen arriving in another.

The notebook's cells run in order, as a student runs them, up to the one that
shows the room (a lesson's last cells stop it); then the test types with the
keyboard, as a student does.  It also checks what is easy to
get wrong and hard to see from Python: that Enter sends and leaving the box
does not, that an empty line is not sent, that markup in a line shows as text,
that the conversation stays on its newest line, and that no cell printed a
warning.  ``test-artifacts/chat-panels.png`` is what the room looked like.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

# The lesson that shows the room: it must show panels for SENDER and RECEIVER
# (chatlib.widgets.show_room), and no other room.
NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "06-broadcast-room.ipynb"
SENDER, RECEIVER = "ana", "beto"

LOAD_TIMEOUT = 180_000  # ms: the first JupyterLab load on a busy two-core machine
STEP_TIMEOUT = 60_000  # ms: guards against hangs only

pytestmark = pytest.mark.timeout(600)

# The open notebook's kernel and cells, seen through the app that
# expose_app_in_browser puts at window.jupyterapp (JupyterLab and Notebook 7 alike).
NOTEBOOK_STATE_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
    && panel.sessionContext.session.kernel;
  if (!kernel || !panel.content || !panel.content.widgets) return null;
  const code = panel.content.widgets.filter(cell => cell.model.type === 'code');
  return {
    kernel: kernel.status,
    cells: code.length,
    run: code.filter(cell => cell.model.executionCount !== null).length,
    outputs: code.map(cell => cell.model.outputs.toJSON()),
  };
}"""


def notebook_state(page) -> dict | None:
    return page.evaluate(NOTEBOOK_STATE_JS)


def problems_in(outputs: list[list[dict]]) -> list[str]:
    """Every stderr stream (warnings land there) and every error a cell left."""
    found = []
    for number, cell in enumerate(outputs, 1):
        for output in cell:
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                found.append(f"code cell {number} wrote to stderr: {''.join(output['text'])}")
            elif output.get("output_type") == "error":
                found.append(f"code cell {number} raised {output['ename']}: {output['evalue']}")
    return found


def open_notebook(page, server, name: str) -> None:
    page.goto(server.page_url(name), timeout=LOAD_TIMEOUT)
    kernel_ready = (
        f"() => {{ const s = ({NOTEBOOK_STATE_JS})(); return s && s.kernel === 'idle'; }}"
    )
    page.wait_for_function(kernel_ready, timeout=LOAD_TIMEOUT)


def assert_no_problems(page) -> None:
    found = problems_in(notebook_state(page)["outputs"])
    assert not found, "\n".join(found)


def open_and_run_all(page, server, name: str) -> None:
    open_notebook(page, server, name)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    all_run = (
        f"() => {{ const s = ({NOTEBOOK_STATE_JS})();"
        " return s && s.kernel === 'idle' && s.run === s.cells; }"
    )
    page.wait_for_function(all_run, timeout=LOAD_TIMEOUT)
    assert_no_problems(page)


# Runs one cell (by its index among all cells) and waits until it has run.
RUN_CELL_JS = """async (index) => {
  const panel = window.jupyterapp.shell.currentWidget;
  panel.content.activeCellIndex = index;
  await window.jupyterapp.commands.execute('notebook:run-cell');
}"""
CELL_DONE_JS = """(index) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cell = panel.content.widgets[index];
  const kernel = panel.sessionContext.session.kernel;
  return kernel.status === 'idle' && cell.model.executionCount !== null;
}"""


def open_and_run_until_the_room(page, server, name: str) -> None:
    """Run the cells in order up to the one that calls show_room, as a student does.

    Not all of them: a lesson ends by stopping its room, which closes the panels.
    """
    open_notebook(page, server, name)
    sources = page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.widgets"
        ".map(cell => [cell.model.type, cell.model.sharedModel.getSource()])"
    )
    for index, (kind, source) in enumerate(sources):
        if kind != "code":
            continue
        page.evaluate(RUN_CELL_JS, index)
        page.wait_for_function(CELL_DONE_JS, arg=index, timeout=LOAD_TIMEOUT)
        assert_no_problems(page)
        if "show_room(" in source:
            return
    pytest.fail(f"{name} has no cell that calls show_room(...)")


def panel(page, nick: str):
    return page.locator(f".chatlib-panel-{nick}")


def log_of(page, nick: str):
    return panel(page, nick).locator(".chatlib-log")


def box_of(page, nick: str):
    return panel(page, nick).locator(".chatlib-input input")


def type_line(page, nick: str, text: str) -> None:
    """Click into ``nick``'s box, type ``text`` key by key, press Enter."""
    box = box_of(page, nick)
    box.click()
    box.press_sequentially(text)
    box.press("Enter")


def wait_until_connected(page, nicks) -> None:
    from playwright.sync_api import expect

    for nick in nicks:
        expect(panel(page, nick).locator(".chatlib-state")).to_contain_text(
            "connected", timeout=STEP_TIMEOUT
        )
        expect(box_of(page, nick)).to_be_enabled(timeout=STEP_TIMEOUT)


def newest_line_in_view(page, nick: str) -> dict:
    return log_of(page, nick).evaluate(
        """log => {
          const box = log.getBoundingClientRect();
          const lines = log.querySelectorAll('.chatlib-msg, .chatlib-notice, .chatlib-error');
          const last = lines[lines.length - 1].getBoundingClientRect();
          return {
            overflows: log.scrollHeight > log.clientHeight + 1,
            in_view: last.top >= box.top - 1 && last.bottom <= box.bottom + 1,
          };
        }"""
    )


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # The course only talks to 127.0.0.0/8; so does its browser test.
    elsewhere: list[str] = []

    def loopback_only(route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host == "localhost" or host.startswith("127."):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", loopback_only)
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT)
    dialogs: list[str] = []  # an alert() would mean a line's markup ran

    def record(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", record)
    page.dialogs = dialogs
    yield page
    context.close()
    assert elsewhere == [], f"the page tried to reach beyond the loopback: {elsewhere}"


def test_jupyterlab_a_line_typed_in_one_panel_arrives_in_another(page, jupyter, artifacts):
    from playwright.sync_api import expect

    server, name = jupyter("jupyterlab", NOTEBOOK)
    open_and_run_until_the_room(page, server, name)
    wait_until_connected(page, [SENDER, RECEIVER])

    cells = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length")

    # A conversation longer than the panel still shows its newest line.  (The
    # notebook may have made one already; if not, type until it overflows.)
    for n in range(1, 41):
        if newest_line_in_view(page, RECEIVER)["overflows"]:
            break
        type_line(page, SENDER, f"filling the panel, line {n}")
        expect(log_of(page, RECEIVER)).to_contain_text(f"filling the panel, line {n}")
    seen = newest_line_in_view(page, RECEIVER)
    assert seen["overflows"], "40 lines should be more than a panel holds"
    assert seen["in_view"], "the panel must stay on its newest line"

    # Typed and Enter: it arrives in the other panel, and the box is empty again.
    line = "hola beto, ¿me lees? ñandú"
    type_line(page, SENDER, line)
    expect(log_of(page, RECEIVER)).to_contain_text(f"{line}", timeout=STEP_TIMEOUT)
    expect(log_of(page, SENDER)).to_contain_text(line)
    expect(panel(page, SENDER).locator(".chatlib-own .chatlib-text").last).to_have_text(line)
    expect(box_of(page, SENDER)).to_have_value("")
    assert newest_line_in_view(page, RECEIVER)["in_view"]

    # The Send button does what Enter does.
    box_of(page, SENDER).click()
    box_of(page, SENDER).press_sequentially("sent with the button")
    panel(page, SENDER).locator(".chatlib-send").click()
    expect(log_of(page, RECEIVER)).to_contain_text("sent with the button")
    expect(box_of(page, SENDER)).to_have_value("")

    # An empty line is not sent: Enter on the empty box, then a line; only the line arrives.
    lines_before = log_of(page, RECEIVER).locator(".chatlib-text").count()
    box_of(page, SENDER).press("Enter")
    type_line(page, SENDER, "after an empty Enter")
    expect(log_of(page, RECEIVER)).to_contain_text("after an empty Enter")
    expect(log_of(page, RECEIVER).locator(".chatlib-text")).to_have_count(lines_before + 1)

    # Leaving a box keeps its half-typed line there; the next Enter in it sends it.
    box_of(page, RECEIVER).click()
    box_of(page, RECEIVER).press_sequentially("a draft")
    type_line(page, SENDER, "sync point")  # clicking away from beto's box
    expect(log_of(page, RECEIVER)).to_contain_text("sync point")
    expect(log_of(page, SENDER)).not_to_contain_text("a draft")
    expect(box_of(page, RECEIVER)).to_have_value("a draft")
    box_of(page, RECEIVER).click()
    box_of(page, RECEIVER).press("Enter")
    expect(log_of(page, SENDER)).to_contain_text("a draft")
    expect(box_of(page, RECEIVER)).to_have_value("")

    # Markup shows as text, and runs nothing.
    markup = "<b>bold?</b> <img src=x onerror=alert(1)>"
    type_line(page, SENDER, markup)
    expect(log_of(page, RECEIVER).locator(".chatlib-text").last).to_have_text(markup)
    assert log_of(page, RECEIVER).locator(".chatlib-text b, .chatlib-text img").count() == 0
    assert page.dialogs == []

    # Typing in a panel is not taken for the notebook's shortcuts (a, b, d d...).
    typed = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length")
    assert typed == cells, "typing in a panel added or removed notebook cells"

    # The room as a student sees it; and still nothing on stderr.
    page.locator(".chatlib-room").scroll_into_view_if_needed()
    page.locator(".chatlib-room").screenshot(path=str(artifacts / "chat-panels.png"))
    assert_no_problems(page)


def test_notebook7_a_line_typed_in_one_panel_arrives_in_another(page, jupyter, artifacts):
    from playwright.sync_api import expect

    server, name = jupyter("notebook", NOTEBOOK)
    open_and_run_until_the_room(page, server, name)
    wait_until_connected(page, [SENDER, RECEIVER])

    line = "hola desde Notebook 7"
    type_line(page, SENDER, line)
    expect(log_of(page, RECEIVER)).to_contain_text(line, timeout=STEP_TIMEOUT)
    expect(box_of(page, SENDER)).to_have_value("")
    assert newest_line_in_view(page, RECEIVER)["in_view"]

    page.locator(".chatlib-room").screenshot(path=str(artifacts / "chat-panels-notebook7.png"))
    assert_no_problems(page)


# The bug stepper and the server console, clicked as a student clicks them.
STEPPER_NOTEBOOK = Path(__file__).with_name("stepper.ipynb")
CRASH = "OSError: [Errno 9] Bad file descriptor"


def test_jupyterlab_bug_stepper_and_server_console(page, jupyter, artifacts):
    from playwright.sync_api import expect

    server, name = jupyter("jupyterlab", STEPPER_NOTEBOOK)
    open_and_run_all(page, server, name)
    stepper = page.locator(".chatlib-stepper")
    servidor = stepper.locator(".chatlib-console-servidor")
    cliente = stepper.locator(".chatlib-console-cliente")
    next_button = stepper.locator(".chatlib-stepper-next")

    expect(page.locator(".chatlib-server-console")).to_contain_text("ana joined")
    expect(page.locator(".chatlib-server-console")).to_contain_text("members (1)")

    expected = [
        (servidor, "Servidor esperando conexion en 127.0.0.1"),
        (cliente, "Escribe lo que quieres enviar:"),
        (servidor, "Escribe tur respuesta:"),
        (cliente, "Respuesta del servidor: hola, cliente"),
        (cliente, CRASH),
    ]
    for number, (console, text) in enumerate(expected, 1):
        expect(next_button).to_contain_text(f"step {number}:")
        next_button.click()
        expect(console).to_contain_text(text)
        if number == 4:  # the server died at the moment it answered
            crash = servidor.locator(".chatlib-term-crash")
            expect(crash).to_have_text(CRASH)
            # Red, as the style says.  An assertion that retries: the console
            # re-renders as output arrives, which can replace the element.
            expect(crash).to_have_css("color", "rgb(255, 85, 85)")
            expect(cliente.locator(".chatlib-term-crash")).to_have_count(0)
    expect(cliente.locator(".chatlib-term-crash")).to_have_text(CRASH)
    expect(next_button).to_be_disabled()
    stepper.screenshot(path=str(artifacts / "bug-stepper.png"))
    page.locator(".chatlib-server-console").screenshot(path=str(artifacts / "server-console.png"))

    stepper.locator(".chatlib-stepper-reset").click()
    expect(servidor).to_contain_text("not started")
    expect(next_button).to_contain_text("step 1:")
    assert_no_problems(page)
