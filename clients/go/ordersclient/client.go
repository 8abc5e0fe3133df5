// Package ordersclient is a thin, idiomatic wrapper around the generated gRPC stubs of
// the order service (package orders.v1, generated into
// example.com/orders/clients/go/gen/orders/v1).
//
// It adds what every caller would otherwise write by hand:
//
//   - a default per-call deadline for unary calls whose context has none;
//   - the caller's identity (x-client-id metadata, or a bearer token);
//   - CreateOrder that always carries a request_id (AIP-155) and retries transient
//     failures with that same id, so a retry can never create a second order;
//   - ListOrders as an iterator over every page;
//   - Details, which decodes the google.rpc.Status details (BadRequest, ErrorInfo,
//     RetryInfo) of an error.
//
// Everything else is available unwrapped through Client.Orders and Client.Inventory,
// which share the same connection, deadline and identity.
package ordersclient

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	ordersv1 "example.com/orders/clients/go/gen/orders/v1"
)

// Defaults of a Client made by Dial.
const (
	// DefaultTimeout is the deadline given to a unary call whose context has none.
	DefaultTimeout = 10 * time.Second
	// DefaultCreateAttempts is how often CreateOrder tries a transient failure.
	DefaultCreateAttempts = 3
	// DefaultRetryBackoff is the first pause between attempts when the server sends
	// no RetryInfo; it doubles after every attempt.
	DefaultRetryBackoff = 50 * time.Millisecond
)

// Metadata keys the service reads to identify the caller.
const (
	ClientIDKey      = "x-client-id"
	AuthorizationKey = "authorization"
)

// Client is a connection to the order service. It is safe for concurrent use.
type Client struct {
	// Orders is the generated OrderService stub, for calls the wrapper does not cover
	// (BatchCreateOrders, StreamCreateOrders, ...).
	Orders ordersv1.OrderServiceClient
	// Inventory is the generated InventoryService stub.
	Inventory ordersv1.InventoryServiceClient

	conn     *grpc.ClientConn
	settings settings
}

type settings struct {
	timeout        time.Duration
	clientID       string
	token          string
	creds          credentials.TransportCredentials
	createAttempts int
	retryBackoff   time.Duration
	dialOptions    []grpc.DialOption
}

// Option configures Dial.
type Option func(*settings)

// WithTimeout sets the deadline of unary calls whose context has none (default
// DefaultTimeout; 0 disables it). Streams never get a default deadline.
func WithTimeout(d time.Duration) Option { return func(s *settings) { s.timeout = d } }

// WithClientID sends the x-client-id metadata with every call. The service trusts it
// when it runs without bearer tokens (internal network); orders are idempotent per
// (client id, request id).
func WithClientID(id string) Option { return func(s *settings) { s.clientID = id } }

// WithBearerToken sends "authorization: Bearer <token>" with every call. Use it with
// WithTransportCredentials on any network that is not loopback.
func WithBearerToken(token string) Option { return func(s *settings) { s.token = token } }

// WithTransportCredentials sets TLS (default: plaintext, for loopback and meshes that
// terminate TLS in a sidecar).
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(s *settings) { s.creds = c }
}

// WithCreateAttempts sets how often CreateOrder tries when the service answers
// UNAVAILABLE or RESOURCE_EXHAUSTED (default DefaultCreateAttempts; 1: no retry).
func WithCreateAttempts(n int) Option { return func(s *settings) { s.createAttempts = n } }

// WithRetryBackoff sets the first pause between CreateOrder attempts when the server
// sends no RetryInfo (default DefaultRetryBackoff).
func WithRetryBackoff(d time.Duration) Option { return func(s *settings) { s.retryBackoff = d } }

// WithDialOptions appends raw grpc.DialOptions (interceptors, a custom dialer, ...).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOptions = append(s.dialOptions, opts...) }
}

// Dial creates a client for the service at address ("host:port", or any gRPC target
// such as "dns:///orders.internal:50051"). Like grpc.NewClient it does not connect
// yet: the first call does, and fails with UNAVAILABLE if the service is unreachable.
func Dial(address string, opts ...Option) (*Client, error) {
	s := settings{
		timeout:        DefaultTimeout,
		createAttempts: DefaultCreateAttempts,
		retryBackoff:   DefaultRetryBackoff,
	}
	for _, opt := range opts {
		opt(&s)
	}
	if s.timeout < 0 {
		return nil, fmt.Errorf("ordersclient: negative timeout %v", s.timeout)
	}
	if s.createAttempts < 1 {
		s.createAttempts = 1
	}
	creds := s.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(s.unaryInterceptor),
		grpc.WithChainStreamInterceptor(s.streamInterceptor),
	}
	dialOptions = append(dialOptions, s.dialOptions...)
	conn, err := grpc.NewClient(address, dialOptions...)
	if err != nil {
		return nil, fmt.Errorf("ordersclient: %w", err)
	}
	return &Client{
		Orders:    ordersv1.NewOrderServiceClient(conn),
		Inventory: ordersv1.NewInventoryServiceClient(conn),
		conn:      conn,
		settings:  s,
	}, nil
}

// Close closes the connection; calls in flight fail with CANCELED.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection (e.g. for the health or reflection services).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

func (s *settings) outgoing(ctx context.Context) context.Context {
	if s.clientID != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, ClientIDKey, s.clientID)
	}
	if s.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, AuthorizationKey, "Bearer "+s.token)
	}
	return ctx
}

func (s *settings) unaryInterceptor(
	ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption,
) error {
	if _, ok := ctx.Deadline(); !ok && s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	return invoker(s.outgoing(ctx), method, req, reply, cc, opts...)
}

func (s *settings) streamInterceptor(
	ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption,
) (grpc.ClientStream, error) {
	return streamer(s.outgoing(ctx), desc, cc, method, opts...)
}

// CreateOrder creates an order. If req.RequestId is empty a new one (NewRequestID) is
// written into req first, so that re-sending the same req later is a replay, never a
// second order. Transient failures (UNAVAILABLE, RESOURCE_EXHAUSTED) are retried with
// the same request_id, waiting as the server's RetryInfo says (else exponential
// backoff), up to the configured attempts and never past ctx's deadline.
//
// A REJECTED order (not enough stock) is a successful answer, not an error: check
// Order.Status.
func (c *Client) CreateOrder(ctx context.Context, req *ordersv1.CreateOrderRequest) (*ordersv1.Order, error) {
	if req == nil {
		return nil, errors.New("ordersclient: nil CreateOrderRequest")
	}
	if req.GetRequestId() == "" {
		req.RequestId = NewRequestID()
	}
	backoff := c.settings.retryBackoff
	for attempt := 1; ; attempt++ {
		order, err := c.Orders.CreateOrder(ctx, req)
		if err == nil || attempt >= c.settings.createAttempts || !Retryable(err) {
			return order, err
		}
		wait := backoff
		if d := Details(err); d != nil && d.RetryDelay > 0 {
			wait = d.RetryDelay
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= wait {
			return nil, err
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, err
		case <-timer.C:
		}
		backoff *= 2
	}
}

// GetOrder returns the order with the given id (NOT_FOUND, reason ORDER_NOT_FOUND, if
// there is none).
func (c *Client) GetOrder(ctx context.Context, orderID string) (*ordersv1.Order, error) {
	return c.Orders.GetOrder(ctx, &ordersv1.GetOrderRequest{OrderId: orderID})
}

// ConfirmOrder moves an ALLOCATED order to CONFIRMED.
func (c *Client) ConfirmOrder(ctx context.Context, orderID string) (*ordersv1.Order, error) {
	return c.Orders.ConfirmOrder(ctx, &ordersv1.ConfirmOrderRequest{OrderId: orderID})
}

// ShipOrder moves a CONFIRMED order to SHIPPED.
func (c *Client) ShipOrder(ctx context.Context, orderID string) (*ordersv1.Order, error) {
	return c.Orders.ShipOrder(ctx, &ordersv1.ShipOrderRequest{OrderId: orderID})
}

// CancelOrder cancels an ALLOCATED, BACKORDERED or CONFIRMED order; reason may be empty.
func (c *Client) CancelOrder(ctx context.Context, orderID, reason string) (*ordersv1.Order, error) {
	return c.Orders.CancelOrder(ctx, &ordersv1.CancelOrderRequest{OrderId: orderID, Reason: reason})
}

// ListOrders iterates over every order the request selects (one customer's, newest
// first), fetching pages as the loop goes; req.PageSize sets the page size and
// req.PageToken where to start. req is not modified. Each page is one call with the
// client's default deadline (unless ctx has its own). On an error the iterator yields
// (nil, err) once and stops:
//
//	for order, err := range client.ListOrders(ctx, &ordersv1.ListOrdersRequest{CustomerId: "c-1"}) {
//		if err != nil {
//			return err
//		}
//		...
//	}
func (c *Client) ListOrders(ctx context.Context, req *ordersv1.ListOrdersRequest) iter.Seq2[*ordersv1.Order, error] {
	return func(yield func(*ordersv1.Order, error) bool) {
		page := proto.Clone(req).(*ordersv1.ListOrdersRequest)
		for {
			resp, err := c.Orders.ListOrders(ctx, page)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, order := range resp.GetOrders() {
				if !yield(order, nil) {
					return
				}
			}
			next := resp.GetNextPageToken()
			if next == "" {
				return
			}
			if next == page.GetPageToken() {
				yield(nil, fmt.Errorf("ordersclient: ListOrders returned the same page token %q twice", next))
				return
			}
			page.PageToken = next
		}
	}
}

// Retryable reports whether err is a transient failure after which the same request
// may be sent again: UNAVAILABLE (the service is not serving or the store failed; the
// request was not acknowledged) or RESOURCE_EXHAUSTED (the queue is full). Only
// idempotent requests (CreateOrder with its request_id, reads) should be retried.
func Retryable(err error) bool {
	d := Details(err)
	if d == nil {
		return false
	}
	return d.Code == codes.Unavailable || d.Code == codes.ResourceExhausted
}
