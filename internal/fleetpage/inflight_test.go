package fleetpage

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestInFlightBound: with MaxInFlight calls running, one more is refused
// with 429 and a Retry-After; a slot freed, calls are served again.
func TestInFlightBound(t *testing.T) {
	h := &Handler{slots: make(chan struct{}, MaxInFlight)}
	served := 0
	fn := h.api(func(context.Context, *http.Request, string) (any, error) { served++; return map[string]int{}, nil })
	for range MaxInFlight {
		h.slots <- struct{}{}
	}
	w := httptest.NewRecorder()
	fn(w, httptest.NewRequest(http.MethodGet, "/fleet/api/groups", nil))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || served != 0 {
		t.Fatalf("call beyond %d in flight = %d (Retry-After %q, served %d); want 429 with Retry-After, not served", MaxInFlight, w.Code, w.Header().Get("Retry-After"), served)
	}
	<-h.slots
	w = httptest.NewRecorder()
	fn(w, httptest.NewRequest(http.MethodGet, "/fleet/api/groups", nil))
	if w.Code != http.StatusOK || served != 1 || len(h.slots) != MaxInFlight-1 {
		t.Fatalf("after a slot freed: %d, served %d, slots taken %d; want 200, 1, %d", w.Code, served, len(h.slots), MaxInFlight-1)
	}
}
