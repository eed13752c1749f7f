"""The segments page: saved filters, groups, campaigns and pilot economics, for staff.

Like the other staff pages it is thin: the layout and the translated strings; the
``segments*.js`` scripts do the rest against the public API (``/api/filters``,
``/api/groups``, ``/api/campaigns``, ``/api/economics``, ``/api/settings/economics``).
"""

from __future__ import annotations

from aiohttp import web

from engine.models import Role
from web import pages
from web.pages_staff import staff_page, staff_page_data

routes = web.RouteTableDef()

TITLE = "Segments and campaigns"

# Every string the segments scripts show; they travel to the page already translated.
# Those the scripts pass to t() through a table (field and operator labels, statuses,
# reasons) are listed here by hand; the literal t("…") calls are checked by a test.
SEGMENT_STRINGS = (
    # shared and filters
    "Select {name}", "Click again to confirm", "choose…", "Save", "Saved filters", "Groups",
    "Group", "Filter saved.", "Filter deleted.", "{n} clients match", "{n} client matches",
    "Complete the highlighted conditions to see the count.",
    "Complete the highlighted conditions first.", "Group {name} created with {n} clients.",
    "Group {name} created with {n} client.",
    # criteria editor
    "Clients matching", "all of these conditions", "any of these conditions",
    "none of these conditions", "No conditions: every client matches.", "Condition",
    "Group of conditions", "Remove group", "Remove condition", "Field", "Value",
    "Custom field name", "field name", "a, b, c",
    "Tier", "State", "Segment class", "Name", "Company", "Source", "Time zone",
    "Last call outcome", "Days since last contact", "Created", "Custom field",
    "is", "is not", "is one of", "contains", "more than", "at least", "less than", "at most",
    "is empty", "is not empty", "on or after", "before", "never contacted",
    "contacted at least once", "key", "important", "regular",
    # groups
    "empty — add clients by hand", "Made from the filter {name} on {time}.",
    "Created on {time}.", "{n} members", "{n} member", "Remove selected", "Remove selected ({n})",
    "Removed {n} clients from the group.", "Removed {n} client from the group.",
    "Add selected to group", "Add selected to group ({n})", "Added {n} clients to the group.",
    "Added {n} client to the group.", "Group deleted.",
    # campaigns
    "filter", "group", "Choose an entry state to see who will call.",
    "Tier {tier}: the ticked operators share the clients; a client's own operator on the "
    "tier keeps them.",
    "Tier {tier} has no active operators: nobody will take these calls.",
    "Tick at least one operator to take the calls.", "Operators: {names}.",
    "Operators: anyone on the tier (its pool).", "The first calls wait in the tier's pool.",
    "Assigned: {list}.", "{n} kept their own operator.",
    "No longer active on the tier, given none: {names}.",
    "draft", "launched", "The control share is a number of per cent.",
    "Campaign {name} created.",
    "{segment}, entering {state}; {share} held back as the control group.",
    "Launch", "Launching…", "do not call", "in a final state", "working in another tier",
    "Launched: {n} clients put into the workflow, {control} held back as the control group.",
    "Launched: {n} client put into the workflow, {control} held back as the control group.",
    "Skipped: {reasons}.", "Nobody was skipped.",
    # campaign report
    "Called", "Control group (not called)",
    "Not enough members in both groups to compare conversion yet.",
    "Calls added {diff} percentage points of conversion (95 % CI {low} to {high}).",
    "Relative lift: {lift}.", "The difference is significant.",
    "The interval includes zero: no effect is proven yet.",
    "Revenue: too few members in a group for an interval.",
    "Revenue per member: calls added {diff} (95 % CI {low} to {high}).", "median {days} d",
    "Response of {name}", "no answer recorded", "accepted", "declined", "no response",
    "Revenue of {name}", "Response recorded.", "called", "control",
    # economics
    "Hourly cost of {name}", "Average per working operator", "Total",
    "Hourly costs are numbers of 0 or more.", "Costs saved.",
)  # fmt: skip


@routes.get("/segments")
async def segments(request: web.Request) -> web.Response:
    user = staff_page(request, Role.SUPERVISOR, Role.ADMIN)
    if isinstance(user, web.Response):
        return user
    context = {"title": TITLE, "page_data": staff_page_data(request, SEGMENT_STRINGS)}
    return pages.render(request, "segments.html", context)


def setup(app: web.Application) -> None:
    app.add_routes(routes)
