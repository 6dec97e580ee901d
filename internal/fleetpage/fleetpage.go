// Package fleetpage serves the fleet page of a control plane replica's
// operations listener: a read-only HTML page at /fleet/ (HTML, a small
// script and a style sheet, embedded in the binary; nothing from a CDN)
// and the JSON API under /fleet/api/ that the page polls every 2 s:
//
//	GET /fleet/api/groups              groups: labels, capacity, connections, utilization
//	GET /fleet/api/executors           executors: group, connections, capacity, draining
//	GET /fleet/api/rebalance           the rebalancer's plan and progress
//	GET /fleet/api/devices/{device}    presence, queued messages, the placement's explanation
//
// The page's files are public; the API shows device data, so each call
// needs an API key (`Authorization: Bearer <key>`) whose holder may make
// the AdminService or MessagingService calls it reads through, checked by
// the replica's access guard: viewer, operator or admin, within the key's
// tenants for a device. It answers 401 without a valid key, 403 for a key
// without the role, 405 for anything but GET or HEAD. Listings are pages
// of at most MaxPageSize (`?limit=`, `?page_token=`), and at most
// MaxInFlight API calls run at once (429 beyond).
//
// Handler reads through small interfaces (the replica's admin and
// messaging servers, in-process), so it holds no state of its own.
package fleetpage

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthproject/berth/access"
	adminv1 "github.com/berthproject/berth/gen/berth/admin/v1"
	messagingv1 "github.com/berthproject/berth/gen/berth/messaging/v1"
	"github.com/berthproject/berth/registry"
)

// Prefix is where the page is served.
const Prefix = "/fleet/"

// MaxPageSize bounds a listing's page; DefaultPageSize is the page of a
// call that asks for none.
const (
	MaxPageSize     = 500
	DefaultPageSize = 100
)

// MaxInFlight bounds the API calls served at once.
const MaxInFlight = 16

// callTimeout bounds one API call's reads.
const callTimeout = 5 * time.Second

// Admin is what the page reads of AdminService. *admin.Server implements
// it.
type Admin interface {
	ListGroups(context.Context, *adminv1.ListGroupsRequest) (*adminv1.ListGroupsResponse, error)
	ListExecutors(context.Context, *adminv1.ListExecutorsRequest) (*adminv1.ListExecutorsResponse, error)
	GetRebalanceStatus(context.Context, *adminv1.GetRebalanceStatusRequest) (*adminv1.GetRebalanceStatusResponse, error)
	Explain(context.Context, *adminv1.ExplainRequest) (*adminv1.ExplainResponse, error)
}

// Devices is what the page reads of MessagingService.
// *messaging.Server implements it.
type Devices interface {
	GetDevice(context.Context, *messagingv1.GetDeviceRequest) (*messagingv1.GetDeviceResponse, error)
}

// Authorizer checks an Authorization header for one RPC, as the gRPC
// interceptors would. *access.Guard implements it.
type Authorizer interface {
	AuthorizeHeader(ctx context.Context, authorization, fullMethod string, req any) (*access.Identity, error)
}

var _ Authorizer = (*access.Guard)(nil)

// Deps are what a Handler reads through.
type Deps struct {
	Admin   Admin      // required
	Devices Devices    // required
	Auth    Authorizer // required
	// Log may be nil.
	Log *slog.Logger
}

//go:embed assets
var assets embed.FS

// Handler serves the page and its API under Prefix.
type Handler struct {
	deps  Deps
	mux   *http.ServeMux
	slots chan struct{}
}

// New returns the handler. It starts nothing and does no I/O.
func New(deps Deps) (*Handler, error) {
	if deps.Admin == nil || deps.Devices == nil || deps.Auth == nil {
		return nil, errors.New("fleetpage: admin, devices and an authorizer are required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{deps: deps, mux: http.NewServeMux(), slots: make(chan struct{}, MaxInFlight)}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, err
	}
	h.mux.Handle("GET "+Prefix, http.StripPrefix(Prefix, http.FileServerFS(sub)))
	h.mux.HandleFunc("GET "+Prefix+"api/groups", h.api(h.groups))
	h.mux.HandleFunc("GET "+Prefix+"api/executors", h.api(h.executors))
	h.mux.HandleFunc("GET "+Prefix+"api/rebalance", h.api(h.rebalance))
	h.mux.HandleFunc("GET "+Prefix+"api/devices/{device}", h.api(h.device))
	h.mux.HandleFunc("GET "+Prefix+"api/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "no such fleet API")
	})
	return h, nil
}

// ServeHTTP implements http.Handler: GET and HEAD only, with headers that
// keep the page to its own origin.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "the fleet page is read-only: GET only")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// apiFunc answers one API call: a JSON value, or an error (a gRPC status
// from the servers read, or an *httpError).
type apiFunc func(ctx context.Context, r *http.Request, authz string) (any, error)

// api wraps an apiFunc: the in-flight bound, the timeout, no caching, the
// JSON answer or the error's HTTP status.
func (h *Handler) api(fn apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		select {
		case h.slots <- struct{}{}:
			defer func() { <-h.slots }()
		default:
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusTooManyRequests, "too many fleet API calls at once; retry")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
		defer cancel()
		v, err := fn(ctx, r, r.Header.Get("Authorization"))
		if err != nil {
			code, msg := httpStatus(err)
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="berth fleet"`)
			}
			if code == http.StatusInternalServerError {
				h.deps.Log.Warn("fleet page: call failed", "path", r.URL.Path, "err", err)
			}
			writeError(w, code, msg)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
}

// httpError is a refusal made here, with its HTTP status.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// httpStatus maps an error to the HTTP status and message the caller
// sees.
func httpStatus(err error) (int, string) {
	var he *httpError
	if errors.As(err, &he) {
		return he.code, he.msg
	}
	st := status.Convert(err)
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.Unauthenticated:
		code = http.StatusUnauthorized
	case codes.PermissionDenied:
		code = http.StatusForbidden
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.ResourceExhausted:
		code = http.StatusTooManyRequests
	case codes.Unavailable, codes.DeadlineExceeded:
		code = http.StatusServiceUnavailable
	case codes.Unimplemented:
		code = http.StatusNotImplemented
	case codes.FailedPrecondition:
		code = http.StatusConflict
	}
	if code == http.StatusInternalServerError {
		return code, "internal error"
	}
	return code, st.Message()
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// page reads ?limit= and ?page_token=.
func page(r *http.Request) (int32, string, error) {
	q := r.URL.Query()
	size := DefaultPageSize
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageSize {
			return 0, "", &httpError{http.StatusBadRequest, "limit: want 1 to " + strconv.Itoa(MaxPageSize)}
		}
		size = n
	}
	tok := q.Get("page_token")
	if len(tok) > 256 {
		return 0, "", &httpError{http.StatusBadRequest, "page_token: not one this page issued"}
	}
	return int32(size), tok, nil
}

// Group is one row of /fleet/api/groups.
type Group struct {
	ID          string   `json:"id"`
	Labels      []string `json:"labels"`
	Capacity    int64    `json:"capacity"`
	State       string   `json:"state"`
	Executors   int64    `json:"executors"`
	Connections int64    `json:"connections"`
	// Utilization is connections / capacity (0 without a capacity).
	Utilization float64 `json:"utilization"`
}

// Groups is the answer of /fleet/api/groups.
type Groups struct {
	Groups        []Group `json:"groups"`
	NextPageToken string  `json:"next_page_token,omitempty"`
}

func (h *Handler) groups(ctx context.Context, r *http.Request, authz string) (any, error) {
	size, tok, err := page(r)
	if err != nil {
		return nil, err
	}
	req := &adminv1.ListGroupsRequest{PageSize: size, PageToken: tok}
	if _, err := h.deps.Auth.AuthorizeHeader(ctx, authz, adminv1.AdminService_ListGroups_FullMethodName, req); err != nil {
		return nil, err
	}
	resp, err := h.deps.Admin.ListGroups(ctx, req)
	if err != nil {
		return nil, err
	}
	out := Groups{Groups: []Group{}, NextPageToken: resp.GetNextPageToken()}
	for _, g := range resp.GetGroups() {
		labels := g.GetLabels()
		if labels == nil {
			labels = []string{}
		}
		out.Groups = append(out.Groups, Group{ID: g.GetGroupId(), Labels: labels, Capacity: g.GetCapacity(), State: g.GetState(),
			Executors: g.GetExecutors(), Connections: g.GetConnections(), Utilization: g.GetUtilization()})
	}
	return out, nil
}

// Executor is one row of /fleet/api/executors.
type Executor struct {
	ID          string     `json:"id"`
	Group       string     `json:"group"`
	Address     string     `json:"address"`
	Connections int64      `json:"connections"`
	Capacity    int64      `json:"capacity"`
	Load        float64    `json:"load"`
	Draining    bool       `json:"draining"`
	DrainMarked bool       `json:"drain_marked"`
	UpdatedAt   *time.Time `json:"updated_at,omitempty"`
}

// Executors is the answer of /fleet/api/executors.
type Executors struct {
	Executors     []Executor `json:"executors"`
	NextPageToken string     `json:"next_page_token,omitempty"`
}

func (h *Handler) executors(ctx context.Context, r *http.Request, authz string) (any, error) {
	size, tok, err := page(r)
	if err != nil {
		return nil, err
	}
	group := r.URL.Query().Get("group")
	if group != "" && !registry.ValidID(group) {
		return nil, &httpError{http.StatusBadRequest, "group: not a group id"}
	}
	req := &adminv1.ListExecutorsRequest{PageSize: size, PageToken: tok, GroupId: group}
	if _, err := h.deps.Auth.AuthorizeHeader(ctx, authz, adminv1.AdminService_ListExecutors_FullMethodName, req); err != nil {
		return nil, err
	}
	resp, err := h.deps.Admin.ListExecutors(ctx, req)
	if err != nil {
		return nil, err
	}
	out := Executors{Executors: []Executor{}, NextPageToken: resp.GetNextPageToken()}
	for _, e := range resp.GetExecutors() {
		out.Executors = append(out.Executors, Executor{ID: e.GetExecutorId(), Group: e.GetGroupId(), Address: e.GetAddress(),
			Connections: e.GetConnections(), Capacity: e.GetCapacity(), Load: e.GetLoad(), Draining: e.GetDraining(),
			DrainMarked: e.GetDrainMarked(), UpdatedAt: optTime(e.GetUpdatedAt())})
	}
	return out, nil
}

// Rebalance is the answer of /fleet/api/rebalance.
type Rebalance struct {
	Leader       string `json:"leader"`
	Paused       bool   `json:"paused"`
	PausedBy     string `json:"paused_by,omitempty"`
	PausedReason string `json:"paused_reason,omitempty"`
	Held         string `json:"held,omitempty"`
	Plan         struct {
		Total         int64      `json:"total"`
		Policy        int64      `json:"policy"`
		Drain         int64      `json:"drain"`
		Balance       int64      `json:"balance"`
		Waiting       int64      `json:"waiting"`
		Unmigrated    int64      `json:"unmigrated"`
		PolicyVersion int64      `json:"policy_version"`
		ComputedAt    *time.Time `json:"computed_at,omitempty"`
	} `json:"plan"`
	Progress struct {
		StartedAt  *time.Time `json:"started_at,omitempty"`
		FinishedAt *time.Time `json:"finished_at,omitempty"`
		Moved      int64      `json:"moved"`
		Failed     int64      `json:"failed"`
		InFlight   int64      `json:"in_flight"`
		Rate       float64    `json:"rate"`
		ETASeconds float64    `json:"eta_seconds"`
	} `json:"progress"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
}

func (h *Handler) rebalance(ctx context.Context, _ *http.Request, authz string) (any, error) {
	req := &adminv1.GetRebalanceStatusRequest{}
	if _, err := h.deps.Auth.AuthorizeHeader(ctx, authz, adminv1.AdminService_GetRebalanceStatus_FullMethodName, req); err != nil {
		return nil, err
	}
	st, err := h.deps.Admin.GetRebalanceStatus(ctx, req)
	if err != nil {
		return nil, err
	}
	var out Rebalance
	out.Leader, out.Paused, out.PausedBy, out.PausedReason, out.Held = st.GetLeader(), st.GetPaused(), st.GetPausedBy(), st.GetPausedReason(), st.GetHeld()
	p := st.GetPlan()
	out.Plan.Total, out.Plan.Policy, out.Plan.Drain, out.Plan.Balance = p.GetTotal(), p.GetPolicy(), p.GetDrain(), p.GetBalance()
	out.Plan.Waiting, out.Plan.Unmigrated, out.Plan.PolicyVersion, out.Plan.ComputedAt = p.GetWaiting(), p.GetUnmigrated(), p.GetPolicyVersion(), optTime(p.GetComputedAt())
	g := st.GetProgress()
	out.Progress.StartedAt, out.Progress.FinishedAt = optTime(g.GetStartedAt()), optTime(g.GetFinishedAt())
	out.Progress.Moved, out.Progress.Failed, out.Progress.InFlight, out.Progress.Rate = g.GetMoved(), g.GetFailed(), g.GetInFlight(), g.GetRate()
	out.Progress.ETASeconds = g.GetEta().AsDuration().Seconds()
	out.UpdatedAt = optTime(st.GetUpdatedAt())
	return out, nil
}

// Device is the answer of /fleet/api/devices/{device}.
type Device struct {
	ID             string     `json:"id"`
	Online         bool       `json:"online"`
	Group          string     `json:"group,omitempty"`
	Executor       string     `json:"executor,omitempty"`
	ConnectedSince *time.Time `json:"connected_since,omitempty"`
	QueuedMessages int64      `json:"queued_messages"`
	AssignedGroup  string     `json:"assigned_group,omitempty"`
	AssignedLabel  string     `json:"assigned_label,omitempty"`
	// Explanation is the placement decided again for the device's
	// assignment record; nil without a record.
	Explanation *Explanation `json:"explanation"`
}

// Explanation says why a device is placed where it is.
type Explanation struct {
	Rule           string      `json:"rule"`
	Label          string      `json:"label"`
	FromLabel      string      `json:"from_label,omitempty"`
	Method         string      `json:"method"`
	Group          string      `json:"group"`
	Reason         string      `json:"reason"`
	PolicyVersion  int64       `json:"policy_version"`
	RecordedGroup  string      `json:"recorded_group"`
	RecordedLabel  string      `json:"recorded_label"`
	RecordedReason string      `json:"recorded_reason"`
	RecordedAt     *time.Time  `json:"recorded_at,omitempty"`
	Candidates     []Candidate `json:"candidates"`
}

// Candidate is one group the placement weighed.
type Candidate struct {
	Group       string  `json:"group"`
	Label       string  `json:"label"`
	Utilization float64 `json:"utilization"`
	Capacity    int64   `json:"capacity"`
	Kept        bool    `json:"kept"`
	Dropped     string  `json:"dropped,omitempty"`
}

func (h *Handler) device(ctx context.Context, r *http.Request, authz string) (any, error) {
	id := r.PathValue("device")
	if !registry.ValidID(id) {
		return nil, &httpError{http.StatusBadRequest, "device: want 1-128 of [A-Za-z0-9._:@-]"}
	}
	greq := &messagingv1.GetDeviceRequest{DeviceId: id}
	if _, err := h.deps.Auth.AuthorizeHeader(ctx, authz, messagingv1.MessagingService_GetDevice_FullMethodName, greq); err != nil {
		return nil, err
	}
	ereq := &adminv1.ExplainRequest{DeviceId: id}
	if _, err := h.deps.Auth.AuthorizeHeader(ctx, authz, adminv1.AdminService_Explain_FullMethodName, ereq); err != nil {
		return nil, err
	}
	d, err := h.deps.Devices.GetDevice(ctx, greq)
	if err != nil {
		return nil, err
	}
	out := Device{ID: d.GetDeviceId(), Online: d.GetOnline(), Group: d.GetGroupId(), Executor: d.GetExecutorId(),
		ConnectedSince: optTime(d.GetConnectedSince()), QueuedMessages: d.GetQueuedMessages(),
		AssignedGroup: d.GetAssignedGroupId(), AssignedLabel: d.GetAssignedLabel()}
	ex, err := h.deps.Admin.Explain(ctx, ereq)
	switch {
	case status.Code(err) == codes.NotFound:
		return out, nil
	case err != nil:
		return nil, err
	}
	e := &Explanation{Rule: ex.GetRule(), Label: ex.GetLabel(), FromLabel: ex.GetFromLabel(), Method: ex.GetMethod(), Group: ex.GetGroupId(),
		Reason: ex.GetReason(), PolicyVersion: ex.GetPolicyVersion(), RecordedGroup: ex.GetRecordedGroupId(), RecordedLabel: ex.GetRecordedLabel(),
		RecordedReason: ex.GetRecordedReason(), RecordedAt: optTime(ex.GetRecordedAt()), Candidates: []Candidate{}}
	for _, c := range ex.GetCandidates() {
		e.Candidates = append(e.Candidates, Candidate{Group: c.GetGroupId(), Label: c.GetLabel(), Utilization: c.GetUtilization(),
			Capacity: c.GetCapacity(), Kept: c.GetKept(), Dropped: c.GetDropped()})
	}
	out.Explanation = e
	return out, nil
}

func optTime(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}
