package ordersclient

import (
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	ordersv1 "example.com/orders/clients/go/gen/orders/v1"
)

// invalidOrderStatus is what the service answers for an invalid create (server/errors.py:
// BadRequest first, then ErrorInfo).
func invalidOrderStatus(t *testing.T) *status.Status {
	t.Helper()
	st, err := status.New(codes.InvalidArgument, "invalid request: lines[0].quantity: must be 1..100000").
		WithDetails(
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
				{Field: "lines[0].quantity", Description: "must be 1..100000"},
				{Field: "lines[0].currency", Description: "unknown currency"},
			}},
			&errdetails.ErrorInfo{Reason: "INVALID_REQUEST", Domain: ErrorDomain},
		)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestDetailsDecodesBadRequestAndErrorInfo(t *testing.T) {
	d := Details(invalidOrderStatus(t).Err())
	if d == nil {
		t.Fatal("Details returned nil for a status error")
	}
	if d.Code != codes.InvalidArgument || d.Reason != "INVALID_REQUEST" || d.Domain != ErrorDomain {
		t.Errorf("got code %v reason %q domain %q", d.Code, d.Reason, d.Domain)
	}
	want := []FieldViolation{
		{"lines[0].quantity", "must be 1..100000"},
		{"lines[0].currency", "unknown currency"},
	}
	if len(d.FieldViolations) != len(want) {
		t.Fatalf("got %d violations, want %d: %+v", len(d.FieldViolations), len(want), d.FieldViolations)
	}
	for i := range want {
		if d.FieldViolations[i] != want[i] {
			t.Errorf("violation %d = %+v, want %+v", i, d.FieldViolations[i], want[i])
		}
	}
	if desc, ok := d.Violation("lines[0].currency"); !ok || desc != "unknown currency" {
		t.Errorf("Violation(lines[0].currency) = %q, %v", desc, ok)
	}
	if _, ok := d.Violation("customer_id"); ok {
		t.Error("Violation(customer_id) found a violation that is not there")
	}
	if d.RetryDelay != 0 {
		t.Errorf("RetryDelay = %v without RetryInfo", d.RetryDelay)
	}
	wantString := "INVALID_ARGUMENT INVALID_REQUEST: invalid request: lines[0].quantity: must be 1..100000" +
		" [lines[0].quantity: must be 1..100000; lines[0].currency: unknown currency]"
	if d.String() != wantString {
		t.Errorf("String() =\n  %s\nwant\n  %s", d.String(), wantString)
	}
}

func TestDetailsSurvivesWrappingAndTheWire(t *testing.T) {
	st := invalidOrderStatus(t)
	// What a client sees after the round trip: the Status proto, marshalled into
	// grpc-status-details-bin and parsed again.
	wire := status.FromProto(st.Proto())
	wrapped := fmt.Errorf("creating order: %w", wire.Err())
	d := Details(wrapped)
	if d == nil || d.Code != codes.InvalidArgument || len(d.FieldViolations) != 2 {
		t.Fatalf("Details(wrapped) = %+v", d)
	}
}

func TestDetailsRetryInfo(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "the service is at capacity").WithDetails(
		&errdetails.ErrorInfo{Reason: "QUEUE_FULL", Domain: ErrorDomain, Metadata: map[string]string{"k": "v"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(50 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	d := Details(st.Err())
	if d.RetryDelay != 50*time.Millisecond || d.Reason != "QUEUE_FULL" || d.Metadata["k"] != "v" {
		t.Errorf("got %+v", d)
	}
	if !Retryable(st.Err()) {
		t.Error("RESOURCE_EXHAUSTED is retryable")
	}
}

func TestDetailsWithoutStatus(t *testing.T) {
	if Details(nil) != nil {
		t.Error("Details(nil) != nil")
	}
	if d := Details(errors.New("plain")); d != nil {
		t.Errorf("Details(plain error) = %+v, want nil", d)
	}
	// A status without details (e.g. a transport error) still has a code.
	d := Details(status.Error(codes.Unavailable, "connection refused"))
	if d == nil || d.Code != codes.Unavailable || d.Reason != "" || d.FieldViolations != nil {
		t.Errorf("got %+v", d)
	}
	if d.String() != "UNAVAILABLE: connection refused" {
		t.Errorf("String() = %q", d.String())
	}
}

func TestRetryable(t *testing.T) {
	for code, want := range map[codes.Code]bool{
		codes.Unavailable:        true,
		codes.ResourceExhausted:  true,
		codes.InvalidArgument:    false,
		codes.AlreadyExists:      false,
		codes.FailedPrecondition: false,
		codes.DeadlineExceeded:   false,
		codes.Canceled:           false,
	} {
		if got := Retryable(status.Error(code, "x")); got != want {
			t.Errorf("Retryable(%v) = %v, want %v", code, got, want)
		}
	}
	if Retryable(errors.New("plain")) || Retryable(nil) {
		t.Error("non-status errors are not retryable")
	}
}

func TestFromOrderError(t *testing.T) {
	d := FromOrderError(&ordersv1.OrderError{
		Code:            int32(codes.AlreadyExists),
		Message:         "request_id reused with a different customer_id",
		Reason:          "REQUEST_ID_REUSED",
		FieldViolations: []*ordersv1.FieldViolation{{Field: "customer_id", Description: "differs"}},
	})
	if d.Code != codes.AlreadyExists || d.Reason != "REQUEST_ID_REUSED" || d.Domain != ErrorDomain {
		t.Errorf("got %+v", d)
	}
	if desc, ok := d.Violation("customer_id"); !ok || desc != "differs" {
		t.Errorf("Violation(customer_id) = %q, %v", desc, ok)
	}
	if FromOrderError(nil) != nil {
		t.Error("FromOrderError(nil) != nil")
	}
}

func TestCodeName(t *testing.T) {
	for code, want := range map[codes.Code]string{
		codes.OK:                 "OK",
		codes.InvalidArgument:    "INVALID_ARGUMENT",
		codes.FailedPrecondition: "FAILED_PRECONDITION",
		codes.Unauthenticated:    "UNAUTHENTICATED",
		codes.DataLoss:           "DATA_LOSS",
	} {
		if got := codeName(code); got != want {
			t.Errorf("codeName(%v) = %q, want %q", code, got, want)
		}
	}
}

var requestIDPattern = regexp.MustCompile(`^r-[0-9a-f]{32}$`)

func TestNewRequestID(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id := NewRequestID()
		if !requestIDPattern.MatchString(id) || len(id) > 64 {
			t.Fatalf("request id %q is not r- and 32 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("request id %q generated twice", id)
		}
		seen[id] = true
	}
}
