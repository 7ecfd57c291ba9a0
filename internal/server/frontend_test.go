package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/guacamole"
)

// frontend makes the CalipsoPlus frontend's requests exactly as its Angular services
// build them (calipsoplus.service.ts, authentication.service.ts): paths and search
// text pasted in unencoded, JSON bodies written by string templates, X-CSRFToken
// read from the csrftoken cookie ("none" when there is none) and sent only on the
// calls that send it, never on login/. compat-api.md is the contract it checks.
type frontend struct {
	*browser
	username string // what the frontend keeps in its session storage
}

func (h *harness) frontend() *frontend { return &frontend{browser: h.browser()} }

// cookieToken is what the frontend's getCookie('csrftoken') finds, or "none".
func (f *frontend) cookieToken() string {
	for _, c := range f.c.Jar.Cookies(mustURL(f.t, f.h.srv.URL+"/")) {
		if c.Name == "csrftoken" {
			return c.Value
		}
	}
	return "none"
}

// call sends path (relative to the base path, query included) as the browser would
// send what the frontend pasted in: unencoded text stays as typed ('%' and '+'
// included), only spaces and non-ASCII bytes are percent-encoded by the browser.
func (f *frontend) call(method, path, body string, header map[string]string) answer {
	f.t.Helper()
	req, err := http.NewRequest(method, f.h.srv.URL+basePath+"PLACEHOLDER", strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	p, q, _ := strings.Cut(basePath+path, "?")
	req.URL.Path, req.URL.RawPath = p, ""
	req.URL.RawQuery = browserEncode(q)
	req.Header.Set("Origin", frontendOrigin) // a CORS request from the frontend's origin
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if body == "" {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	return f.send(req)
}

func browserEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ' ' || c >= 0x80 {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

var jsonHeader = map[string]string{"Content-Type": "application/json"}

func (f *frontend) get(path string) answer {
	f.t.Helper()
	return f.call(http.MethodGet, path, "", nil)
}

// withToken is what the frontend adds to PUT favorite/, POST umbrella/wuo/ and POST
// images/.
func (f *frontend) withToken() map[string]string {
	return map[string]string{"Content-Type": "application/json", "X-CSRFToken": f.cookieToken()}
}

// login is the login form: logout/ first, login/ only when that succeeded.
func (f *frontend) login(username, password string) answer {
	f.t.Helper()
	out := f.call(http.MethodGet, "logout/", "", jsonHeader)
	wantJSONText(f.t, out, http.StatusOK, "Logout OK")
	a := f.call(http.MethodPost, "login/", `{"username":"`+username+`","password":"`+password+`"}`, jsonHeader)
	if a.status/100 == 2 {
		f.username = username
	}
	return a
}

// experiments is getCalipsoExperiments: page, ordering always; search and the
// favourites filter when set.
func (f *frontend) experiments(page int, order, search, filter string) answer {
	f.t.Helper()
	u := "users/" + f.username + "/experiments/?page=" + strconv.Itoa(page) + "&ordering=" + order
	if search != "" {
		u += "&search=" + search
	}
	if filter != "" {
		u += "&calipsouserexperiment__favorite=" + filter
	}
	return f.get(u)
}

func (f *frontend) favorite(id int64, value string) answer {
	f.t.Helper()
	return f.call(http.MethodPut, "favorite/"+strconv.FormatInt(id, 10)+"/", `{"favorite":"`+value+`"}`, f.withToken())
}

func (f *frontend) run(experiment, image string) answer {
	f.t.Helper()
	return f.call(http.MethodGet, "resource/run/"+f.username+"/"+experiment+"/"+image+"/", "", jsonHeader)
}

func (f *frontend) stop(c container) answer {
	f.t.Helper()
	return f.get("resource/stop/" + f.username + "/" + c.ContainerName + "/" + c.PublicName + "/")
}

func (f *frontend) rm(c container) answer {
	f.t.Helper()
	return f.get("resource/rm/" + f.username + "/" + c.ContainerName + "/" + c.PublicName + "/")
}

func (f *frontend) list(user string) []container {
	f.t.Helper()
	a := f.get("resource/list/" + user + "/")
	wantStatus(f.t, a, http.StatusOK)
	var raw []map[string]any
	a.json(f.t, &raw)
	out := make([]container, 0, len(raw))
	for _, m := range raw {
		out = append(out, parseContainer(f.t, m))
	}
	return out
}

// wantJSONText checks a 2xx answer whose body is the JSON string want.
func wantJSONText(t testing.TB, a answer, status int, want string) {
	t.Helper()
	wantStatus(t, a, status)
	var got string
	if a.json(t, &got); got != want {
		t.Fatalf("body %q, want the JSON string %q", got, want)
	}
}

// container is a record as the frontend reads it: every [parsed] field checked for
// its type on the way in.
type container struct {
	ID                int64
	CalipsoExperiment string
	ContainerName     string
	ContainerStatus   string
	GuacamoleUsername string
	GuacamolePassword string
	CreationDate      time.Time
	HostPort          string
	PublicName        string
	ContainerInfo     string
}

func parseContainer(t testing.TB, m map[string]any) container {
	t.Helper()
	wantKeys(t, m, containerShape)
	var c container
	id, ok := m["id"].(float64)
	if !ok || id != float64(int64(id)) || id <= 0 {
		t.Fatalf("id %v: want a positive integer", m["id"])
	}
	c.ID = int64(id)
	c.CalipsoExperiment, _ = m["calipso_experiment"].(string)
	c.ContainerName, _ = m["container_name"].(string)
	c.ContainerStatus, _ = m["container_status"].(string)
	c.GuacamoleUsername, _ = m["guacamole_username"].(string)
	c.GuacamolePassword, _ = m["guacamole_password"].(string)
	c.HostPort, _ = m["host_port"].(string)
	c.PublicName, _ = m["public_name"].(string)
	c.ContainerInfo, _ = m["container_info"].(string)
	c.CreationDate = parseBrowserDate(t, "creation_date", m["creation_date"])
	if c.ContainerName == "" || strings.ContainsAny(c.ContainerName, "/?#% ") {
		t.Errorf("container_name %q: goes into URLs and window names unencoded", c.ContainerName)
	}
	if !slices.Contains([]string{"busy", "created", "stopped", "removed", "error"}, c.ContainerStatus) {
		t.Errorf("container_status %q is not one of the frontend's", c.ContainerStatus)
	}
	return c
}

// isoDate is what the browser's Date parser and Angular's date pipe read: ISO 8601
// with a T, UTC marked Z, optional fractional seconds.
var isoDate = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$`)

func parseBrowserDate(t testing.TB, field string, v any) time.Time {
	t.Helper()
	s, ok := v.(string)
	if !ok || !isoDate.MatchString(s) {
		t.Fatalf("%s %v: want an ISO 8601 date-time in UTC with Z", field, v)
	}
	d, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s %q: %v", field, s, err)
	}
	return d
}

// frontendSize is the frontend's parseInt(s.slice(0, -1), 10) of a size, in GB; ok
// is false where JavaScript would get NaN.
func frontendSize(s string) (n int, ok bool) {
	if s == "" {
		return 0, false
	}
	digits := s[:len(s)-1]
	i := 0
	for i < len(digits) && digits[i] >= '0' && digits[i] <= '9' {
		i++
	}
	n, err := strconv.Atoi(digits[:i])
	return n, err == nil
}

// quotaJSON is quota/ and used_quota/ as the frontend reads them.
type quotaJSON struct {
	CPU             float64 `json:"cpu"`
	Memory          string  `json:"memory"`
	HDD             string  `json:"hdd"`
	MaxSimultaneous int     `json:"max_simultaneous"`
}

type imageJSON struct {
	PublicName string  `json:"public_name"`
	Protocol   string  `json:"protocol"`
	CPU        float64 `json:"cpu"`
	Memory     string  `json:"memory"`
	HDD        string  `json:"hdd"`
}

func (f *frontend) quotas(user string) (quota, used quotaJSON) {
	f.t.Helper()
	for _, q := range []struct {
		path string
		into *quotaJSON
	}{{"used_quota/" + user + "/", &used}, {"quota/" + user + "/", &quota}} {
		a := f.get(q.path)
		wantStatus(f.t, a, http.StatusOK)
		wantKeys(f.t, a.object(f.t), quotaShape)
		a.json(f.t, q.into)
		for _, s := range []string{q.into.Memory, q.into.HDD} {
			if _, ok := frontendSize(s); !ok || !strings.HasSuffix(s, "G") {
				f.t.Fatalf("%s: size %q is not a whole number of G: the frontend reads NaN or another unit", q.path, s)
			}
		}
	}
	return quota, used
}

func (f *frontend) image(name string) imageJSON {
	f.t.Helper()
	a := f.get("images/" + name + "/")
	wantStatus(f.t, a, http.StatusOK)
	var im imageJSON
	a.json(f.t, &im)
	return im
}

// launchWarnings is check_quota of the proposals and Resources pages: the warnings
// that disable every Launch button, computed as the frontend computes them.
func (f *frontend) launchWarnings(image string) []string {
	f.t.Helper()
	quota, used := f.quotas(f.username)
	im := f.image(image)
	size := func(s string) int { n, _ := frontendSize(s); return n }
	var w []string
	if quota.MaxSimultaneous-used.MaxSimultaneous <= 0 {
		w = append(w, "machines")
	}
	if (quota.CPU-used.CPU)-im.CPU < 0 {
		w = append(w, "cpu")
	}
	if size(quota.Memory)-size(used.Memory)-size(im.Memory) < 0 {
		w = append(w, "memory")
	}
	if size(quota.HDD)-size(used.HDD)-size(im.HDD) < 0 {
		w = append(w, "storage")
	}
	return w
}

// sessionRow is the proposals page's status of a session row from the list: the
// first record whose calipso_experiment equals the session number, strictly.
func sessionRow(list []container, sessionNumber string) string {
	for _, c := range list {
		if c.CalipsoExperiment == sessionNumber {
			switch c.ContainerStatus {
			case "busy":
				return "waiting"
			case "created":
				return "running"
			case "stopped", "removed":
				return "idle"
			default:
				return "error"
			}
		}
	}
	return "idle"
}

// expPage is an experiments page as the frontend reads it.
type expPageJSON struct {
	Count    int              `json:"count"`
	PageSize int              `json:"page_size"`
	Results  []map[string]any `json:"results"`
}

func readExperiments(t testing.TB, a answer) expPageJSON {
	t.Helper()
	wantStatus(t, a, http.StatusOK)
	wantKeys(t, a.object(t), pageShape)
	var p expPageJSON
	a.json(t, &p)
	if p.PageSize <= 0 {
		t.Fatalf("page_size %d: the page buttons need a positive integer", p.PageSize)
	}
	for _, e := range p.Results {
		wantKeys(t, e, experimentShape)
		sessions, _ := e["sessions"].([]any)
		for _, s := range sessions {
			sm, _ := s.(map[string]any)
			wantKeys(t, sm, sessionShape)
			for _, d := range []string{"start_date", "end_date"} {
				if sm[d] != nil {
					parseBrowserDate(t, d, sm[d])
				}
			}
		}
		for _, id := range []string{"uid", "gid"} {
			if s, _ := e[id].(string); s != "" {
				if _, err := strconv.Atoi(s); err != nil {
					t.Errorf("%s %q: want numeric text or \"\"", id, s)
				}
			}
		}
	}
	return p
}

func proposalIDs(p expPageJSON) []string {
	var out []string
	for _, e := range p.Results {
		out = append(out, e["proposal_id"].(string))
	}
	return out
}

// TestFrontendContract walks the frontend's pages in the order it calls the API,
// for a scientist and then an admin, checking every [parsed] field of compat-api.md.
func TestFrontendContract(t *testing.T) {
	onBothDatabases(t, func(t *testing.T, h *harness) {
		f := h.frontend()
		t.Run("login page", func(t *testing.T) { frontendLogin(t, h, f.in(t)) })
		t.Run("home", func(t *testing.T) { frontendHome(t, f.in(t)) })
		t.Run("proposals", func(t *testing.T) { frontendProposals(t, f.in(t)) })
		t.Run("launch a static link", func(t *testing.T) { frontendLaunch(t, f.in(t), "2019002~2019002-01", "static_link") })
		t.Run("failed launch", func(t *testing.T) { frontendFailedLaunch(t, h, f.in(t)) })
		t.Run("admin pages", func(t *testing.T) { frontendAdmin(t, h) })
		t.Run("logout", func(t *testing.T) {
			f := f.in(t)
			wantJSONText(t, f.call(http.MethodGet, "logout/", "", jsonHeader), http.StatusOK, "Logout OK")
			if a := f.get("users/alice/"); a.status != http.StatusUnauthorized && a.status != http.StatusForbidden {
				t.Fatalf("users/alice/ after logout: %d", a.status)
			}
		})
	})
}

// in points f at a subtest's t; the subtests of one walk run one after the other and
// share the frontend's state (cookies, the stored username).
func (f *frontend) in(t testing.TB) *frontend {
	f.browser = f.browser.in(t)
	return f
}

func frontendLogin(t *testing.T, h *harness, f *frontend) {
	a := f.get("settings/")
	wantStatus(t, a, http.StatusOK)
	wantKeys(t, a.object(t), map[string]string{"local_auth": "bool"})
	// The frontend runs elsewhere and reads csrftoken through document.cookie.
	for _, c := range a.header.Values("Set-Cookie") {
		if strings.HasPrefix(c, "csrftoken=") && (strings.Contains(c, "HttpOnly") || !strings.Contains(c, "Path=/;") && !strings.HasSuffix(c, "Path=/")) {
			t.Errorf("csrftoken cookie %q: must be readable by script, with path /", c)
		}
	}
	// An impossible password: the template makes invalid JSON, 400 as the original.
	if a := f.login("alice", `al"ice`); a.status != http.StatusBadRequest {
		t.Errorf("password with a quote: %d %s, want 400", a.status, a.body)
	}
	wantJSONText(t, f.login("alice", "wrong"), http.StatusUnauthorized, "Unable to authenticate")
	// No X-CSRFToken, as the frontend sends it.
	wantJSONText(t, f.login("alice", "alice-demo"), http.StatusOK, "Login OK")
	// A second login on the same browser (logout/ first): still no token needed.
	wantJSONText(t, f.login("alice", "alice-demo"), http.StatusOK, "Login OK")
	// A login from another site is refused all the same.
	evil := h.frontend()
	a = evil.call(http.MethodPost, "login/", `{"username":"alice","password":"alice-demo"}`, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"})
	wantError(t, a, http.StatusForbidden)
}

func frontendHome(t *testing.T, f *frontend) {
	a := f.get("users/alice/")
	wantStatus(t, a, http.StatusOK)
	m := a.object(t)
	wantKeys(t, m, userShape)
	inner, _ := m["user"].(map[string]any)
	wantKeys(t, inner, innerUser)
	if inner["username"] != "alice" || inner["is_superuser"] != false {
		t.Errorf("users/alice/: %v", inner)
	}
	parseBrowserDate(t, "last_login", inner["last_login"])
	if uuid, _ := m["calipso_uid"].(string); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(uuid) {
		t.Errorf("calipso_uid %q: want a UUID with dashes", uuid)
	}
}

func frontendProposals(t *testing.T, f *frontend) {
	// The page asks for the resources first, then the experiments.
	if list := f.list("alice"); len(list) != 0 {
		t.Fatalf("resource/list/: %v, want []", list)
	}
	first := readExperiments(t, f.experiments(1, "", "", ""))
	if first.Count != 5 || first.PageSize != 7 || len(first.Results) != 5 {
		t.Fatalf("page 1: count %d page_size %d results %d, want 5, 7, 5", first.Count, first.PageSize, len(first.Results))
	}
	if ids := proposalIDs(first); !slices.IsSorted(ids) {
		t.Errorf("default order %v: want proposal_id ascending", ids)
	}

	// The star: {"favorite":"1"} as a string, with the cookie's token.
	star := first.Results[2]
	id := int64(star["id"].(float64))
	a := f.favorite(id, "1")
	wantStatus(t, a, http.StatusOK)
	favs := readExperiments(t, f.experiments(1, "", "", "1"))
	if got := proposalIDs(favs); len(got) != 1 || got[0] != star["proposal_id"] || favs.Results[0]["favorite"] != true {
		t.Fatalf("favourites page: %v, want only %v starred", got, star["proposal_id"])
	}
	if others := readExperiments(t, f.experiments(1, "", "", "0")); others.Count != 4 {
		t.Errorf("favorite=0: count %d, want 4", others.Count)
	}

	// Every ordering the frontend sends: the five columns, both directions.
	for _, col := range []string{"proposal_id", "subject", "body", "beam_line", "calipsouserexperiment__favorite"} {
		for _, order := range []string{col, "-" + col} {
			p := readExperiments(t, f.experiments(1, order, "", ""))
			if p.Count != 5 {
				t.Errorf("ordering=%s: count %d", order, p.Count)
				continue
			}
			key := func(e map[string]any) string {
				if col == "calipsouserexperiment__favorite" {
					return strconv.FormatBool(e["favorite"].(bool))
				}
				return e[col].(string)
			}
			keys := make([]string, len(p.Results))
			for i, e := range p.Results {
				keys[i] = key(e)
			}
			sorted := slices.IsSorted(keys)
			if strings.HasPrefix(order, "-") {
				slices.Reverse(keys)
				sorted = slices.IsSorted(keys)
			}
			if !sorted {
				t.Errorf("ordering=%s: %v not in order", order, keys)
			}
		}
	}
	// The star column puts the starred proposal last, then first.
	if p := readExperiments(t, f.experiments(1, "-calipsouserexperiment__favorite", "", "")); p.Results[0]["proposal_id"] != star["proposal_id"] {
		t.Errorf("-calipsouserexperiment__favorite: %v first, want %v", p.Results[0]["proposal_id"], star["proposal_id"])
	}
	wantStatus(t, f.favorite(id, "0"), http.StatusOK)

	// Search as typed: split on spaces and commas, every term somewhere; odd text taken
	// literally and never refused.
	for _, c := range []struct {
		search string
		want   []string
	}{
		{"lysozyme", []string{"2019001"}},
		{"LYSOZYME crystallography", []string{"2019001"}},
		{"lysozyme,xaloc", []string{"2019001"}},
		{"lysozyme boreas", nil},
		{"2019", []string{"2019001", "2019002", "2019003"}},
		{"50%", nil},
		{"100%zz", nil},
		{"lysozyme+crystallography", []string{"2019001"}}, // '+' is a space, as for Django
		{"Grenzflächen", []string{"2020001"}},
		{"%C3%9Cr%C3%BCn", []string{"2020001"}}, // what a browser makes of "Ürün"
		{"'; DROP TABLE users; --", nil},
	} {
		p := readExperiments(t, f.experiments(1, "", c.search, ""))
		if got := proposalIDs(p); !slices.Equal(got, c.want) {
			t.Errorf("search %q: %v, want %v", c.search, got, c.want)
		}
	}
	// Clicking a resource badge searches for its container_info, a proposal id.
	if p := readExperiments(t, f.experiments(1, "", "2019003", "")); p.Count != 1 {
		t.Errorf("badge search: count %d, want 1", p.Count)
	}
	// A page past the end is an empty page with the true count, not an error.
	if p := readExperiments(t, f.experiments(9, "subject", "", "")); p.Count != 5 || len(p.Results) != 0 {
		t.Errorf("page past the end: count %d, %d results", p.Count, len(p.Results))
	}
}

// frontendLaunch: Launch on a session row, the row's status from the list, Enter,
// then Stop (stop, then rm), as the proposals page does them.
func frontendLaunch(t *testing.T, f *frontend, ref, image string, whileUp ...func(c container)) container {
	proposal, session, ok := strings.Cut(ref, "~")
	if !ok { // an own resource: the id is both
		proposal, session = ref, ref
	}
	if w := f.launchWarnings(image); len(w) > 0 {
		t.Fatalf("the frontend would disable Launch: %v", w)
	}
	quotaBefore, usedBefore := f.quotas(f.username)
	a := f.run(ref, image)
	wantStatus(t, a, http.StatusCreated)
	c := parseContainer(t, a.object(t))
	if c.ContainerStatus != "created" || c.CalipsoExperiment != session || c.ContainerInfo != proposal || c.PublicName != image {
		t.Fatalf("run: status %q calipso_experiment %q container_info %q public_name %q; want created, %q, %q, %q",
			c.ContainerStatus, c.CalipsoExperiment, c.ContainerInfo, c.PublicName, session, proposal, image)
	}
	if time.Since(c.CreationDate) > time.Minute || time.Until(c.CreationDate) > time.Minute {
		t.Errorf("creation_date %v is not now", c.CreationDate)
	}
	// After a launch the page re-checks the quota with the record's image.
	quota, used := f.quotas(f.username)
	if used.MaxSimultaneous != usedBefore.MaxSimultaneous+1 || quota != quotaBefore {
		t.Errorf("used quota %+v after the launch (before %+v)", used, usedBefore)
	}
	list := f.list(f.username)
	if got := sessionRow(list, session); got != "running" {
		t.Fatalf("the session row shows %q, want running; list %+v", got, list)
	}
	// Enter: the first record with that calipso_experiment.
	i := slices.IndexFunc(list, func(x container) bool { return x.CalipsoExperiment == session })
	enter := list[i]
	if enter.ID != c.ID || enter.ContainerName != c.ContainerName {
		t.Fatalf("the list's record %+v is not the launched %+v", enter, c)
	}
	if !strings.HasPrefix(enter.HostPort, "http") && (enter.GuacamoleUsername == "" || enter.GuacamolePassword == "") {
		t.Errorf("Enter opens Guacamole with empty credentials: %+v", enter)
	}
	// A second launch for the same session is refused.
	wantError(t, f.run(ref, image), http.StatusConflict)
	for _, check := range whileUp {
		check(enter)
	}

	// Stop, then rm only when stop succeeded; both answers about the same record.
	a = f.stop(enter)
	wantStatus(t, a, http.StatusOK)
	stopped := parseContainer(t, a.object(t))
	if stopped.ID != c.ID || stopped.ContainerName != c.ContainerName || stopped.CalipsoExperiment != session || stopped.PublicName != image || stopped.ContainerStatus != "stopped" {
		t.Fatalf("stop answered %+v for %+v", stopped, c)
	}
	a = f.rm(stopped)
	wantStatus(t, a, http.StatusOK)
	removed := parseContainer(t, a.object(t))
	if removed.ID != c.ID || removed.ContainerName != c.ContainerName || removed.CalipsoExperiment != session || removed.ContainerStatus != "removed" {
		t.Fatalf("rm answered %+v for %+v", removed, c)
	}
	if list := f.list(f.username); sessionRow(list, session) != "idle" || len(list) != 0 {
		t.Errorf("after rm the list is %+v", list)
	}
	// Stop and rm again (a second tab): the same record, never an error or a list.
	wantStatus(t, f.stop(enter), http.StatusOK)
	wantStatus(t, f.rm(enter), http.StatusOK)
	if _, used := f.quotas(f.username); used != usedBefore {
		t.Errorf("used quota %+v after rm, want %+v", used, usedBefore)
	}
	return c
}

// frontendFailedLaunch: the row turns red with an error answer, no card stays, the
// quota is released, and a stale Stop (stop, rm) of the failed record clears it.
func frontendFailedLaunch(t *testing.T, h *harness, f *frontend) {
	admin := h.loggedIn("carol")
	// A link the engine refuses at start.
	wantStatus(t, admin.do(http.MethodPost, "images/broken_link/",
		map[string]any{"public_name": "broken_link", "image": "ftp://nowhere.example/", "protocol": "", "cpu": "0", "memory": "0G", "hdd": "0G", "resource_type": "static link"}), http.StatusCreated)
	_, usedBefore := f.quotas(f.username)
	a := f.run("2019002~2019002-01", "broken_link")
	if a.status < 400 {
		t.Fatalf("failed launch answered %d %s", a.status, a.body)
	}
	wantError(t, a, a.status)
	if list := f.list(f.username); len(list) != 0 {
		t.Fatalf("a failed launch left %+v in the list", list)
	}
	if _, used := f.quotas(f.username); used != usedBefore {
		t.Errorf("used quota %+v after a failed launch, want %+v", used, usedBefore)
	}
	// The record an older list could still show: Stop answers it, then rm removes it.
	var name string
	if err := h.db.DB().QueryRow(`SELECT engine_name FROM resources WHERE state = ? ORDER BY id DESC LIMIT 1`, string(calipso.Failed)).Scan(&name); err != nil {
		t.Fatalf("the failed record: %v", err)
	}
	failed := container{ContainerName: name, PublicName: "broken_link"}
	a = f.stop(failed)
	wantStatus(t, a, http.StatusOK)
	if c := parseContainer(t, a.object(t)); c.ContainerStatus != "error" {
		t.Errorf("stop of a failed launch: status %q", c.ContainerStatus)
	}
	a = f.rm(failed)
	wantStatus(t, a, http.StatusOK)
	if c := parseContainer(t, a.object(t)); c.ContainerStatus != "removed" {
		t.Errorf("rm of a failed launch: status %q", c.ContainerStatus)
	}
	// The session can be launched again.
	frontendLaunch(t, f, "2019002~2019002-01", "static_link")
}

func frontendAdmin(t *testing.T, h *harness) {
	f := h.frontend()
	wantJSONText(t, f.login("carol", "carol-demo"), http.StatusOK, "Login OK")
	home := f.get("users/carol/")
	wantStatus(t, home, http.StatusOK)
	if inner := home.object(t)["user"].(map[string]any); inner["is_superuser"] != true {
		t.Fatalf("carol is not shown the Admin card: %v", inner)
	}
	// Users page: every ordering the two columns send, the search box, pages.
	h.loggedIn("alice")
	h.loggedIn("bob")
	for _, order := range []string{"", "id", "-id", "user__username", "-user__username"} {
		a := f.get("users/?page=1&ordering=" + order)
		wantStatus(t, a, http.StatusOK)
		wantKeys(t, a.object(t), pageShape)
		var p struct {
			Count    int        `json:"count"`
			PageSize int        `json:"page_size"`
			Results  []userJSON `json:"results"`
		}
		a.json(t, &p)
		if p.Count != 3 || p.PageSize != 20 || len(p.Results) != 3 {
			t.Fatalf("users ordering=%q: count %d page_size %d results %d", order, p.Count, p.PageSize, len(p.Results))
		}
		var ids []int64
		var names []string
		for _, u := range p.Results {
			ids, names = append(ids, u.ID), append(names, u.User.Username)
		}
		ok := true
		switch strings.TrimPrefix(order, "-") {
		case "", "id":
			if strings.HasPrefix(order, "-") {
				slices.Reverse(ids)
			}
			ok = slices.IsSorted(ids)
		case "user__username":
			if strings.HasPrefix(order, "-") {
				slices.Reverse(names)
			}
			ok = slices.IsSorted(names)
		}
		if !ok {
			t.Errorf("users ordering=%q: %v %v not in order", order, ids, names)
		}
	}
	for _, c := range []struct {
		search string
		want   int
	}{{"ali", 1}, {"CAR", 1}, {"50%", 0}, {"bob,carol", 0}} {
		a := f.get("users/?page=1&ordering=user__username&search=" + c.search)
		wantStatus(t, a, http.StatusOK)
		var p struct {
			Count int `json:"count"`
		}
		if a.json(t, &p); p.Count != c.want {
			t.Errorf("users search %q: count %d, want %d", c.search, p.Count, c.want)
		}
	}
	if a := f.get("users/?page=5&ordering="); a.status != http.StatusOK || !strings.Contains(string(a.body), `"results":[]`) {
		t.Errorf("users page past the end: %d %s", a.status, a.body)
	}

	// A user's profile page, as the admin sees it.
	wantStatus(t, f.get("users/alice/"), http.StatusOK)
	f.quotas("alice")
	f.list("alice")

	// Container Images: the Add form's exact body (cpu as typed text, protocol upper
	// case), then Refresh.
	form := `{"public_name":"xfce","image":"calipso/xfce:1","protocol":"VNC","cpu":"2","memory":"4G","hdd":"8","resource_type":"docker"}`
	wantStatus(t, f.call(http.MethodPost, "images/xfce/", form, f.withToken()), http.StatusCreated)
	wantStatus(t, f.call(http.MethodPost, "images/xfce/", form, f.withToken()), http.StatusOK)
	if im := f.image("xfce"); im.Protocol != "vnc" || im.CPU != 2 || im.Memory != "4G" || im.HDD != "8G" {
		t.Errorf("the added image reads %+v", im)
	}
	a := f.get("images/")
	wantStatus(t, a, http.StatusOK)
	var list []map[string]any
	a.json(t, &list)
	if !slices.ContainsFunc(list, func(m map[string]any) bool { return m["public_name"] == "xfce" }) {
		t.Errorf("images/ lacks the new image: %s", a.body)
	}
	for _, m := range list {
		for _, k := range []string{"memory", "hdd"} {
			if s, _ := m[k].(string); !regexp.MustCompile(`^\d+G$`).MatchString(s) {
				t.Errorf("image %v: %s %q is not whole G", m["public_name"], k, s)
			}
		}
	}
	// Sizes that are not whole gigabytes, and the VM form's empty fields: 400.
	for _, bad := range []string{
		`{"public_name":"xfce","image":"calipso/xfce:1","protocol":"VNC","cpu":"2","memory":"512M","hdd":"8G","resource_type":"docker"}`,
		`{"public_name":"xfce","image":"calipso/xfce:1","protocol":"VNC","cpu":"2","memory":"1.5G","hdd":"8G","resource_type":"docker"}`,
		`{"public_name":"xfce","image":"vm-template","flavor":"m1","protocol":"","cpu":"","memory":"","hdd":"","resource_type":"virtual machine"}`,
	} {
		wantError(t, f.call(http.MethodPost, "images/xfce/", bad, f.withToken()), http.StatusBadRequest)
	}
	// A scientist may not add images.
	g := h.frontend()
	wantJSONText(t, g.login("alice", "alice-demo"), http.StatusOK, "Login OK")
	wantError(t, g.call(http.MethodPost, "images/xfce/", form, g.withToken()), http.StatusForbidden)
	// A lost cookie: the frontend sends "none", which is refused.
	wantError(t, f.call(http.MethodPost, "images/xfce/", form, map[string]string{"Content-Type": "application/json", "X-CSRFToken": "none"}), http.StatusForbidden)
}

type userJSON struct {
	ID   int64 `json:"id"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
}

// TestFrontendOwnResources: the Resources page's "Own resource" launcher, shown when
// login/type/ says so, launches with a 5-character id and no experiment.
func TestFrontendOwnResources(t *testing.T) {
	t.Run("not authorised", func(t *testing.T) {
		h := newHarness(t)
		f := h.frontend()
		wantJSONText(t, f.login("alice", "alice-demo"), http.StatusOK, "Login OK")
		a := f.get("login/type/")
		wantStatus(t, a, http.StatusOK)
		wantKeys(t, a.object(t), map[string]string{"result": "bool"})
		if a.object(t)["result"] != false {
			t.Fatalf("login/type/ for alice: %s, want false", a.body)
		}
		wantError(t, f.run("k3x9q", "static_link"), http.StatusForbidden)
	})
	t.Run("authorised by the user office", func(t *testing.T) {
		h := newHarness(t)
		f := h.frontend()
		wantJSONText(t, f.login("carol", "carol-demo"), http.StatusOK, "Login OK")
		if a := f.get("login/type/"); a.object(t)["result"] != true {
			t.Fatalf("login/type/ for carol: %s, want true", a.body)
		}
		c := frontendLaunch(t, f, "k3x9q", "static_link")
		// The Resources page labels a record OWN RESOURCE by its 5 characters.
		if c.CalipsoExperiment != "k3x9q" || c.ContainerInfo != "k3x9q" || len(c.CalipsoExperiment) != 5 {
			t.Errorf("own resource: calipso_experiment %q container_info %q", c.CalipsoExperiment, c.ContainerInfo)
		}
		// Occasionally shorter, never an experiment.
		a := f.run("k3x", "static_link")
		wantStatus(t, a, http.StatusCreated)
		if c := parseContainer(t, a.object(t)); c.CalipsoExperiment != "k3x" {
			t.Errorf("short id: %+v", c)
		}
		wantError(t, f.run("k3x", "static_link"), http.StatusConflict)
	})
}

// TestFrontendQuotaArithmetic: launch until refused, and at every step the frontend's
// warnings (sizes parsed its way) agree with the server's decision.
func TestFrontendQuotaArithmetic(t *testing.T) {
	cases := []struct {
		name  string
		quota string // POST quota/carol/
		image string // POST images/sized/
	}{
		{"machines", `{"cpu": 10, "memory": "30G", "hdd": "80G", "max_simultaneous": 2}`, `"cpu": "1", "memory": "1G", "hdd": "1G"`},
		{"cpu", `{"cpu": 3, "memory": "30G", "hdd": "80G", "max_simultaneous": 9}`, `"cpu": "2", "memory": "1G", "hdd": "1G"`},
		{"memory", `{"cpu": 10, "memory": "5G", "hdd": "80G", "max_simultaneous": 9}`, `"cpu": "1", "memory": "2G", "hdd": "1G"`},
		{"storage", `{"cpu": 10, "memory": "30G", "hdd": "7G", "max_simultaneous": 9}`, `"cpu": "1", "memory": "1G", "hdd": "3G"`},
		{"zero quota", `{"cpu": 0, "memory": "0G", "hdd": "0G", "max_simultaneous": 0}`, `"cpu": "0", "memory": "0G", "hdd": "0G"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			f := h.frontend()
			wantJSONText(t, f.login("carol", "carol-demo"), http.StatusOK, "Login OK")
			wantStatus(t, f.call(http.MethodPost, "quota/carol/", c.quota, f.withToken()), http.StatusOK)
			img := `{"public_name":"sized","image":"https://example.org/","protocol":"",` + c.image + `,"resource_type":"static link"}`
			wantStatus(t, f.call(http.MethodPost, "images/sized/", img, f.withToken()), http.StatusCreated)
			launched := 0
			for i := range 12 {
				warnings := f.launchWarnings("sized")
				a := f.run(fmt.Sprintf("own%02d", i), "sized")
				switch {
				case len(warnings) == 0 && a.status == http.StatusCreated:
					launched++
				case len(warnings) > 0 && a.status == http.StatusConflict:
					wantError(t, a, http.StatusConflict)
					if launched == 0 && c.name != "zero quota" {
						t.Fatalf("refused at once: %v", warnings)
					}
					return
				default:
					t.Fatalf("launch %d: the frontend warns %v, the server answered %d %s", i, warnings, a.status, a.body)
				}
			}
			t.Fatalf("12 launches and no limit reached")
		})
	}
}

// TestFrontendJSONBodies: every 2xx body the frontend reads is JSON, the plain
// messages included (a non-JSON 2xx is a failure to its HTTP client).
func TestFrontendJSONBodies(t *testing.T) {
	h := newHarness(t)
	f := h.frontend()
	for _, path := range []string{"logout/", "umbrella/logout/", "settings/"} {
		a := f.get(path)
		wantStatus(t, a, http.StatusOK)
		if !json.Valid(a.body) {
			t.Errorf("%s: body %q is not JSON", path, a.body)
		}
	}
}

// TestFrontendDockerDesktop: the launch flow for a VNC desktop on the real Docker
// engine, with its Guacamole record in Guacamole's real schema: Enter opens Guacamole
// with credentials Guacamole accepts, for a connection that reaches the desktop.
func TestFrontendDockerDesktop(t *testing.T) {
	h := newHarness(t, withDocker())
	f := h.frontend()
	wantJSONText(t, f.login("alice", "alice-demo"), http.StatusOK, "Login OK")
	f.list("alice")
	readExperiments(t, f.experiments(1, "", "", ""))
	frontendLaunch(t, f, "2019002~2019002-01", desktopImage, func(c container) {
		if !regexp.MustCompile(`^[0-9]+$`).MatchString(c.HostPort) {
			t.Fatalf("host_port %q: a desktop's is the published port as text", c.HostPort)
		}
		// What guacd would do: the published port answers with the VNC banner (once the
		// workload listens: a desktop counts as up when its process started).
		if banner, err := vncBanner("127.0.0.1:"+c.HostPort, 20*time.Second); err != nil || banner != "RFB 003.008\n" {
			t.Fatalf("desktop banner %q, %v", banner, err)
		}
		// Enter: ?t=base64(un=<guacamole_username>&up=<guacamole_password>) logs in to
		// Guacamole only if it holds that user with that password.
		var hash, salt []byte
		err := h.guacDB.QueryRow(`SELECT u.password_hash, u.password_salt FROM guacamole_user u
			JOIN guacamole_entity e ON e.entity_id = u.entity_id WHERE e.name = ? AND e.type = 'USER'`, c.GuacamoleUsername).Scan(&hash, &salt)
		if err != nil {
			t.Fatalf("Guacamole user %q: %v", c.GuacamoleUsername, err)
		}
		if !bytes.Equal(guacamole.HashPassword(c.GuacamolePassword, salt), hash) {
			t.Fatalf("Guacamole would refuse guacamole_password for %q", c.GuacamoleUsername)
		}
		var port string
		err = h.guacDB.QueryRow(`SELECT p.parameter_value FROM guacamole_connection_parameter p
			JOIN guacamole_connection c ON c.connection_id = p.connection_id WHERE c.connection_name = ? AND p.parameter_name = 'port'`, c.ContainerName).Scan(&port)
		if err != nil || port != c.HostPort {
			t.Fatalf("Guacamole connection %q: port %q, %v; want %s", c.ContainerName, port, err, c.HostPort)
		}
	})
	// Stop and rm took the desktop and its Guacamole records away.
	var n int
	if err := h.guacDB.QueryRow(`SELECT COUNT(*) FROM guacamole_connection`).Scan(&n); err != nil || n != 0 {
		t.Errorf("Guacamole connections after rm: %d, %v", n, err)
	}
}

// vncBanner reads the first 12 bytes a VNC server sends, retrying until the workload
// behind the published port listens or patience runs out.
func vncBanner(addr string, patience time.Duration) (string, error) {
	deadline := time.Now().Add(patience)
	for {
		banner, err := func() (string, error) {
			conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				return "", err
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, 12)
			_, err = io.ReadFull(conn, b)
			return string(b), err
		}()
		if err == nil || time.Now().After(deadline) {
			return banner, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestImagePidsLimitKept: an admin sets an image's process limit through the API; the
// frontend's Add Image form, which knows no such field, replaces the image without
// losing it.
func TestImagePidsLimitKept(t *testing.T) {
	h := newHarness(t)
	f := h.frontend()
	wantJSONText(t, f.login("carol", "carol-demo"), http.StatusOK, "Login OK")
	withPids := `{"public_name":"xfce","image":"calipso/xfce:1","protocol":"vnc","cpu":2,"memory":"4G","hdd":"8G","resource_type":"docker","pids_limit":64}`
	wantStatus(t, f.call(http.MethodPost, "images/xfce/", withPids, f.withToken()), http.StatusCreated)
	form := `{"public_name":"xfce","image":"calipso/xfce:2","protocol":"VNC","cpu":"2","memory":"4G","hdd":"8G","resource_type":"docker"}`
	wantStatus(t, f.call(http.MethodPost, "images/xfce/", form, f.withToken()), http.StatusOK)
	a := f.get("images/xfce/")
	wantStatus(t, a, http.StatusOK)
	if m := a.object(t); m["pids_limit"] != float64(64) || m["image"] != "calipso/xfce:2" {
		t.Fatalf("after the form: %s, want pids_limit 64 kept and the new image", a.body)
	}
}
