package ordersclient

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ordersv1 "example.com/orders/clients/go/gen/orders/v1"
)

// ErrorDomain is the ErrorInfo.domain of the service's own errors.
const ErrorDomain = "orders.v1"

// FieldViolation is one invalid field of a request: a path such as
// "lines[0].quantity" (relative to the item in batch results) and why.
type FieldViolation struct {
	Field       string
	Description string
}

// ErrorDetails is a gRPC error decoded: the code and message, and what the
// google.rpc.Status details carry (docs/engine.md lists the reasons).
type ErrorDetails struct {
	Code    codes.Code
	Message string
	// Reason is ErrorInfo.reason, e.g. "INVALID_REQUEST", "ORDER_NOT_FOUND",
	// "ILLEGAL_TRANSITION"; empty if the error has no ErrorInfo (e.g. a transport
	// error).
	Reason string
	// Domain is ErrorInfo.domain ("orders.v1" for the service's own errors).
	Domain string
	// Metadata is ErrorInfo.metadata (nil if none).
	Metadata map[string]string
	// FieldViolations come from google.rpc.BadRequest, in the server's order.
	FieldViolations []FieldViolation
	// RetryDelay is google.rpc.RetryInfo.retry_delay: wait this long before retrying
	// (0 if the server gave none).
	RetryDelay time.Duration
}

// Details decodes err (a gRPC status error, possibly wrapped with fmt.Errorf("%w"))
// into its code and google.rpc details. It returns nil if err is nil or carries no
// gRPC status. Unknown detail types are skipped.
func Details(err error) *ErrorDetails {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	return FromStatus(st)
}

// FromStatus decodes a *status.Status (see Details).
func FromStatus(st *status.Status) *ErrorDetails {
	if st == nil {
		return nil
	}
	d := &ErrorDetails{Code: st.Code(), Message: st.Message()}
	for _, detail := range st.Details() {
		switch v := detail.(type) {
		case *errdetails.BadRequest:
			for _, fv := range v.GetFieldViolations() {
				d.FieldViolations = append(d.FieldViolations, FieldViolation{
					Field: fv.GetField(), Description: fv.GetDescription(),
				})
			}
		case *errdetails.ErrorInfo:
			if d.Reason == "" {
				d.Reason, d.Domain, d.Metadata = v.GetReason(), v.GetDomain(), v.GetMetadata()
			}
		case *errdetails.RetryInfo:
			if v.GetRetryDelay() != nil {
				d.RetryDelay = v.GetRetryDelay().AsDuration()
			}
		}
	}
	return d
}

// FromOrderError decodes the per-item error of a BatchCreateOrders or
// StreamCreateOrders result; it carries the same details a unary call would.
func FromOrderError(e *ordersv1.OrderError) *ErrorDetails {
	if e == nil {
		return nil
	}
	d := &ErrorDetails{Code: codes.Code(e.GetCode()), Message: e.GetMessage(), Reason: e.GetReason()}
	if d.Reason != "" {
		d.Domain = ErrorDomain
	}
	for _, fv := range e.GetFieldViolations() {
		d.FieldViolations = append(d.FieldViolations, FieldViolation{
			Field: fv.GetField(), Description: fv.GetDescription(),
		})
	}
	return d
}

// Violation returns the description of the first violation of field, and whether
// there is one.
func (d *ErrorDetails) Violation(field string) (string, bool) {
	if d == nil {
		return "", false
	}
	for _, fv := range d.FieldViolations {
		if fv.Field == field {
			return fv.Description, true
		}
	}
	return "", false
}

// String is "CODE REASON: message [field: description; ...]".
func (d *ErrorDetails) String() string {
	if d == nil {
		return "<nil>"
	}
	var b strings.Builder
	b.WriteString(codeName(d.Code))
	if d.Reason != "" {
		b.WriteString(" " + d.Reason)
	}
	if d.Message != "" {
		b.WriteString(": " + d.Message)
	}
	if len(d.FieldViolations) > 0 {
		parts := make([]string, len(d.FieldViolations))
		for i, fv := range d.FieldViolations {
			parts[i] = fv.Field + ": " + fv.Description
		}
		b.WriteString(" [" + strings.Join(parts, "; ") + "]")
	}
	return b.String()
}

// codeName is the canonical upper-snake name of a code (INVALID_ARGUMENT, ...).
func codeName(c codes.Code) string {
	// codes.Code.String() is CamelCase ("InvalidArgument"); the wire names are the
	// upper-snake ones users see in docs and logs.
	if c == codes.OK {
		return "OK"
	}
	s := c.String()
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// NewRequestID returns a fresh idempotency key: "r-" and 32 lower-case hex digits (128
// random bits), within the service's 64-character [A-Za-z0-9._:-] limit. Keep it with
// the request and send the same key on every retry.
func NewRequestID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (Go 1.24+: it crashes the program instead)
	return "r-" + hex.EncodeToString(b[:])
}
