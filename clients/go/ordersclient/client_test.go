package ordersclient

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	ordersv1 "example.com/orders/clients/go/gen/orders/v1"
)

// fakeOrders is an in-process OrderService (over bufconn, no network): it records what
// it received and answers from scripted values.
type fakeOrders struct {
	ordersv1.UnimplementedOrderServiceServer

	mu         sync.Mutex
	createErrs []error  // answers of the next CreateOrder calls (nil: success)
	requestIDs []string // request_id of every CreateOrder call
	deadlines  []time.Duration
	metadata   []metadata.MD
	pages      map[string]*ordersv1.ListOrdersResponse // by page token
	pageCalls  int
}

func (f *fakeOrders) record(ctx context.Context) {
	if deadline, ok := ctx.Deadline(); ok {
		f.deadlines = append(f.deadlines, time.Until(deadline))
	} else {
		f.deadlines = append(f.deadlines, 0)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	f.metadata = append(f.metadata, md)
}

func (f *fakeOrders) CreateOrder(ctx context.Context, req *ordersv1.CreateOrderRequest) (*ordersv1.Order, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(ctx)
	f.requestIDs = append(f.requestIDs, req.GetRequestId())
	if len(f.createErrs) > 0 {
		err := f.createErrs[0]
		f.createErrs = f.createErrs[1:]
		if err != nil {
			return nil, err
		}
	}
	return &ordersv1.Order{OrderId: "o-" + req.GetRequestId(), RequestId: req.GetRequestId(), Version: 1}, nil
}

func (f *fakeOrders) GetOrder(ctx context.Context, req *ordersv1.GetOrderRequest) (*ordersv1.Order, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(ctx)
	if req.GetOrderId() == "missing" {
		st, _ := status.New(codes.NotFound, "no order missing").
			WithDetails(&errdetails.ErrorInfo{Reason: "ORDER_NOT_FOUND", Domain: ErrorDomain})
		return nil, st.Err()
	}
	return &ordersv1.Order{OrderId: req.GetOrderId()}, nil
}

func (f *fakeOrders) ListOrders(ctx context.Context, req *ordersv1.ListOrdersRequest) (*ordersv1.ListOrdersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pageCalls++
	resp, ok := f.pages[req.GetPageToken()]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "bad page token %q", req.GetPageToken())
	}
	return resp, nil
}

// start serves fake over bufconn and dials it through Dial with opts.
func start(t *testing.T, fake *fakeOrders, opts ...Option) *Client {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	server := grpc.NewServer()
	ordersv1.RegisterOrderServiceServer(server, fake)
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(server.Stop)
	dialer := func(ctx context.Context, _ string) (net.Conn, error) { return listener.DialContext(ctx) }
	opts = append([]Option{WithDialOptions(grpc.WithContextDialer(dialer))}, opts...)
	client, err := Dial("passthrough:///bufnet", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func TestDefaultDeadlineAndIdentity(t *testing.T) {
	fake := &fakeOrders{}
	client := start(t, fake, WithTimeout(3*time.Second), WithClientID("checkout"), WithBearerToken("s3cret"))
	if _, err := client.GetOrder(context.Background(), "o-1"); err != nil {
		t.Fatal(err)
	}
	// A deadline of the caller's own wins over the default.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.GetOrder(ctx, "o-2"); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if d := fake.deadlines[0]; d <= 0 || d > 3*time.Second {
		t.Errorf("default deadline: server saw %v left, want (0, 3s]", d)
	}
	if d := fake.deadlines[1]; d <= 3*time.Second {
		t.Errorf("caller's deadline: server saw %v left, want about 1m", d)
	}
	md := fake.metadata[0]
	if got := md.Get(ClientIDKey); len(got) != 1 || got[0] != "checkout" {
		t.Errorf("%s = %v", ClientIDKey, got)
	}
	if got := md.Get(AuthorizationKey); len(got) != 1 || got[0] != "Bearer s3cret" {
		t.Errorf("%s = %v", AuthorizationKey, got)
	}
}

func TestNoDefaultDeadline(t *testing.T) {
	fake := &fakeOrders{}
	client := start(t, fake, WithTimeout(0))
	if _, err := client.GetOrder(context.Background(), "o-1"); err != nil {
		t.Fatal(err)
	}
	if d := fake.deadlines[0]; d != 0 {
		t.Errorf("WithTimeout(0): server saw a deadline %v", d)
	}
	if _, err := Dial("passthrough:///x", WithTimeout(-time.Second)); err == nil {
		t.Error("Dial accepted a negative timeout")
	}
}

func TestCreateOrderGeneratesRequestID(t *testing.T) {
	fake := &fakeOrders{}
	client := start(t, fake)
	req := &ordersv1.CreateOrderRequest{CustomerId: "c-1"}
	order, err := client.CreateOrder(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !requestIDPattern.MatchString(req.GetRequestId()) {
		t.Fatalf("request id %q was not generated into the request", req.GetRequestId())
	}
	if order.GetRequestId() != req.GetRequestId() {
		t.Errorf("server saw request id %q, request has %q", order.GetRequestId(), req.GetRequestId())
	}
	// A request id of the caller's own is kept.
	req2 := &ordersv1.CreateOrderRequest{RequestId: "mine-1"}
	if _, err := client.CreateOrder(context.Background(), req2); err != nil {
		t.Fatal(err)
	}
	if fake.requestIDs[1] != "mine-1" || req2.GetRequestId() != "mine-1" {
		t.Errorf("caller's request id replaced: %v", fake.requestIDs)
	}
}

func TestCreateOrderRetriesTransientFailuresWithTheSameRequestID(t *testing.T) {
	full, _ := status.New(codes.ResourceExhausted, "full").WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(20 * time.Millisecond)})
	fake := &fakeOrders{createErrs: []error{status.Error(codes.Unavailable, "store down"), full.Err(), nil}}
	client := start(t, fake, WithRetryBackoff(time.Millisecond))
	started := time.Now()
	order, err := client.CreateOrder(context.Background(), &ordersv1.CreateOrderRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.requestIDs) != 3 {
		t.Fatalf("%d attempts, want 3", len(fake.requestIDs))
	}
	for _, id := range fake.requestIDs {
		if id != order.GetRequestId() {
			t.Errorf("attempts used different request ids: %v", fake.requestIDs)
		}
	}
	if elapsed := time.Since(started); elapsed < 20*time.Millisecond {
		t.Errorf("RetryInfo delay not honoured: done after %v", elapsed)
	}
}

func TestCreateOrderGivesUp(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "down")
	fake := &fakeOrders{createErrs: []error{unavailable, unavailable, unavailable}}
	client := start(t, fake, WithCreateAttempts(2), WithRetryBackoff(time.Millisecond))
	_, err := client.CreateOrder(context.Background(), &ordersv1.CreateOrderRequest{})
	if status.Code(err) != codes.Unavailable || len(fake.requestIDs) != 2 {
		t.Errorf("err %v after %d attempts; want UNAVAILABLE after 2", err, len(fake.requestIDs))
	}

	invalid := status.Error(codes.InvalidArgument, "bad")
	fake = &fakeOrders{createErrs: []error{invalid, nil}}
	client = start(t, fake, WithRetryBackoff(time.Millisecond))
	_, err = client.CreateOrder(context.Background(), &ordersv1.CreateOrderRequest{})
	if status.Code(err) != codes.InvalidArgument || len(fake.requestIDs) != 1 {
		t.Errorf("err %v after %d attempts; INVALID_ARGUMENT must not be retried", err, len(fake.requestIDs))
	}

	// A deadline shorter than the retry delay ends the retries at once.
	fake = &fakeOrders{createErrs: []error{unavailable, nil}}
	client = start(t, fake, WithRetryBackoff(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err = client.CreateOrder(ctx, &ordersv1.CreateOrderRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("err %v, want the UNAVAILABLE of the only attempt", err)
	}
}

func TestErrorDetailsOverTheWire(t *testing.T) {
	client := start(t, &fakeOrders{})
	_, err := client.GetOrder(context.Background(), "missing")
	d := Details(err)
	if d == nil || d.Code != codes.NotFound || d.Reason != "ORDER_NOT_FOUND" || d.Domain != ErrorDomain {
		t.Errorf("Details = %+v", d)
	}
}

func listPages(n, perPage int) map[string]*ordersv1.ListOrdersResponse {
	pages := make(map[string]*ordersv1.ListOrdersResponse)
	for p := range n {
		resp := &ordersv1.ListOrdersResponse{}
		for i := range perPage {
			resp.Orders = append(resp.Orders, &ordersv1.Order{OrderId: fmt.Sprintf("o-%d", p*perPage+i)})
		}
		if p+1 < n {
			resp.NextPageToken = "t" + strconv.Itoa(p+1)
		}
		token := ""
		if p > 0 {
			token = "t" + strconv.Itoa(p)
		}
		pages[token] = resp
	}
	return pages
}

func TestListOrdersIteratesEveryPage(t *testing.T) {
	fake := &fakeOrders{pages: listPages(3, 2)}
	client := start(t, fake)
	req := &ordersv1.ListOrdersRequest{CustomerId: "c-1", PageSize: 2}
	var ids []string
	for order, err := range client.ListOrders(context.Background(), req) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, order.GetOrderId())
	}
	if fmt.Sprint(ids) != "[o-0 o-1 o-2 o-3 o-4 o-5]" {
		t.Errorf("got %v", ids)
	}
	if req.GetPageToken() != "" {
		t.Error("ListOrders modified the request")
	}

	// Stopping early fetches no further page.
	fake.pageCalls = 0
	for order, err := range client.ListOrders(context.Background(), req) {
		if err != nil || order.GetOrderId() == "o-2" {
			break
		}
	}
	if fake.pageCalls != 2 {
		t.Errorf("breaking at o-2 fetched %d pages, want 2", fake.pageCalls)
	}
}

func TestListOrdersYieldsTheErrorOnce(t *testing.T) {
	pages := listPages(2, 1)
	pages[""].NextPageToken = "gone"
	client := start(t, &fakeOrders{pages: pages})
	var got []string
	for order, err := range client.ListOrders(context.Background(), &ordersv1.ListOrdersRequest{}) {
		if err != nil {
			got = append(got, "error:"+status.Code(err).String())
			continue // the iterator must stop by itself
		}
		got = append(got, order.GetOrderId())
	}
	if fmt.Sprint(got) != "[o-0 error:InvalidArgument]" {
		t.Errorf("got %v", got)
	}
}
