// Command smoke drives a real, running order service through the generated Go client:
// it proves that proto/orders/v1 is a contract any gRPC client can use, not a detail
// of the Python server.
//
//	go run ./cmd/smoke -address 127.0.0.1:50051
//
// Everything it creates is named after a fresh run id (region, locations, SKU,
// customer), so it can run against a shared server, any number of times. It prints
// one line per check and, last, "N passed, M failed"; the exit status is 0 only if
// every check passed (1 if one failed, 2 for bad flags). With -wait it first waits for
// the standard health service to answer SERVING (for a server that is still starting).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	ordersv1 "example.com/orders/clients/go/gen/orders/v1"
	"example.com/orders/clients/go/ordersclient"
)

func main() {
	address := flag.String("address", "127.0.0.1:50051", "the service's gRPC address (host:port)")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call")
	clientID := flag.String("client-id", "go-smoke", "x-client-id sent with every call (service without auth)")
	token := flag.String("token", "", "bearer token (service with --auth-tokens)")
	wait := flag.Duration("wait", 0, "first wait up to this long until the service reports SERVING (grpc.health.v1)")
	flag.Parse()
	if flag.NArg() > 0 || *timeout <= 0 || *wait < 0 {
		flag.Usage()
		os.Exit(2)
	}

	opts := []ordersclient.Option{
		ordersclient.WithTimeout(*timeout),
		ordersclient.WithClientID(*clientID),
		// Reconnect quickly while -wait polls a server that is still starting (gRPC's
		// default backoff grows to two minutes).
		ordersclient.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		})),
	}
	if *token != "" {
		opts = append(opts, ordersclient.WithBearerToken(*token))
	}
	client, err := ordersclient.Dial(*address, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "smoke:", err)
		os.Exit(2)
	}
	defer client.Close()

	s := &smoke{client: client, run: newRunID()}
	fmt.Printf("smoke: %s, run %s\n", *address, s.run)
	if *wait == 0 || s.check("health SERVING", func() (string, error) { return waitServing(client, *wait) }) {
		s.all(context.Background())
	}
	fmt.Printf("%d passed, %d failed\n", s.passed, s.failed)
	if s.failed > 0 || s.passed == 0 {
		os.Exit(1)
	}
}

// waitServing polls the standard health service until it answers SERVING.
func waitServing(client *ordersclient.Client, limit time.Duration) (string, error) {
	started := time.Now()
	health := healthpb.NewHealthClient(client.Conn())
	var last error
	for time.Since(started) < limit {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		reply, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && reply.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return fmt.Sprintf("after %.1fs", time.Since(started).Seconds()), nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("health status %s", reply.GetStatus())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return "", fmt.Errorf("not SERVING after %v: %v", limit, describe(last))
}

// newRunID is 8 hex digits: short enough for the 32-byte region limit.
func newRunID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type smoke struct {
	client         *ordersclient.Client
	run            string
	passed, failed int
}

// check runs one named check and prints "ok" or "FAIL" with what it found. It returns
// false when the check failed.
func (s *smoke) check(name string, fn func() (string, error)) bool {
	detail, err := fn()
	if err != nil {
		s.failed++
		fmt.Printf("FAIL %-36s %v\n", name, describe(err))
		return false
	}
	s.passed++
	fmt.Printf("ok   %-36s %s\n", name, detail)
	return true
}

// describe shows a gRPC error with its decoded details.
func describe(err error) string {
	if d := ordersclient.Details(err); d != nil {
		return d.String()
	}
	return err.Error()
}

func (s *smoke) all(ctx context.Context) {
	var (
		region    = "go-smoke-" + s.run
		locA      = "go-smoke-" + s.run + "-a"
		locB      = "go-smoke-" + s.run + "-b"
		sku       = "go-smoke-" + s.run + "-sku"
		customer  = "go-smoke-" + s.run + "-customer"
		created   *ordersv1.Order
		createReq *ordersv1.CreateOrderRequest
	)
	inventory := s.client.Inventory

	// A required step makes state that later steps need: if it fails, the run stops.
	steps := []struct {
		name     string
		required bool
		fn       func() (string, error)
	}{
		{"ConfigureRegion", true, func() (string, error) {
			got, err := inventory.ConfigureRegion(ctx, &ordersv1.ConfigureRegionRequest{Region: &ordersv1.Region{
				Region: region, Strategy: ordersv1.AllocationStrategy_ALLOCATION_STRATEGY_PRIORITY,
			}})
			if err != nil {
				return "", err
			}
			if got.GetRegion() != region {
				return "", fmt.Errorf("answered region %q, want %q", got.GetRegion(), region)
			}
			return fmt.Sprintf("region %s, %s, ttl %ds", got.GetRegion(), got.GetStrategy(), got.GetReservationTtlSeconds()), nil
		}},
		{"UpsertLocation x2", true, func() (string, error) {
			for i, id := range []string{locA, locB} {
				want := &ordersv1.Location{LocationId: id, Region: region, Priority: int32(i + 1)}
				got, err := inventory.UpsertLocation(ctx, &ordersv1.UpsertLocationRequest{Location: want})
				if err != nil {
					return "", err
				}
				if !proto.Equal(got, want) {
					return "", fmt.Errorf("answered %v, want %v", got, want)
				}
			}
			return locA + " (priority 1), " + locB + " (priority 2)", nil
		}},
		{"SetStock", true, func() (string, error) {
			// Neither location can fill 5 alone: SPLIT must take 3 from A and 2 from B.
			for _, st := range []struct {
				loc    string
				onHand int64
			}{{locA, 3}, {locB, 4}} {
				got, err := inventory.SetStock(ctx, &ordersv1.SetStockRequest{Sku: sku, LocationId: st.loc, OnHand: st.onHand})
				if err != nil {
					return "", err
				}
				if got.GetOnHand() != st.onHand || got.GetAvailable() != st.onHand || got.GetReserved() != 0 {
					return "", fmt.Errorf("%s: answered %v", st.loc, got)
				}
			}
			return sku + ": 3 at A, 4 at B", nil
		}},
		{"CreateOrder SPLIT is ALLOCATED", true, func() (string, error) {
			createReq = &ordersv1.CreateOrderRequest{
				CustomerId: customer,
				Region:     region,
				Lines:      []*ordersv1.OrderLine{{Sku: sku, Quantity: 5, UnitPriceMinor: 1250, Currency: "EUR"}},
				Policy:     ordersv1.AllocationPolicy_ALLOCATION_POLICY_SPLIT,
			}
			order, err := s.client.CreateOrder(ctx, createReq)
			if err != nil {
				return "", err
			}
			created = order
			if order.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_ALLOCATED {
				return "", fmt.Errorf("status %s (%s), want ALLOCATED", order.GetStatus(), order.GetStatusReason())
			}
			if order.GetVersion() != 1 || order.GetRequestId() != createReq.GetRequestId() || order.GetOrderId() == "" {
				return "", fmt.Errorf("order %s version %d request %q", order.GetOrderId(), order.GetVersion(), order.GetRequestId())
			}
			return fmt.Sprintf("%s version %d, request_id %s", order.GetOrderId(), order.GetVersion(), createReq.GetRequestId()), nil
		}},
		{"allocations sum to the quantity", false, func() (string, error) {
			var sum int64
			perLocation := map[string]int64{}
			for _, a := range created.GetAllocations() {
				sum += a.GetQuantity()
				perLocation[a.GetLocationId()] += a.GetQuantity()
			}
			if sum != 5 {
				return "", fmt.Errorf("allocations %v sum to %d, want 5", created.GetAllocations(), sum)
			}
			if perLocation[locA] != 3 || perLocation[locB] != 2 {
				return "", fmt.Errorf("allocated %v, want 3 at A and 2 at B (priority order)", perLocation)
			}
			if created.GetTotalMinor() != 5*1250 || created.GetCurrency() != "EUR" {
				return "", fmt.Errorf("total %d %s, want 6250 EUR", created.GetTotalMinor(), created.GetCurrency())
			}
			return fmt.Sprintf("%d allocations: 3 at A + 2 at B = 5; total 6250 EUR", len(created.GetAllocations())), nil
		}},
		{"retry same request_id is a replay", false, func() (string, error) {
			again, err := s.client.CreateOrder(ctx, createReq)
			if err != nil {
				return "", err
			}
			if again.GetOrderId() != created.GetOrderId() || again.GetVersion() != created.GetVersion() {
				return "", fmt.Errorf("replay answered %s version %d, want %s version %d",
					again.GetOrderId(), again.GetVersion(), created.GetOrderId(), created.GetVersion())
			}
			if !proto.Equal(again, created) {
				return "", fmt.Errorf("replay differs from the first answer:\n  %v\n  %v", again, created)
			}
			return fmt.Sprintf("same order %s, version %d, identical", again.GetOrderId(), again.GetVersion()), nil
		}},
		{"GetOrder equals the created order", false, func() (string, error) {
			got, err := s.client.GetOrder(ctx, created.GetOrderId())
			if err != nil {
				return "", err
			}
			if !proto.Equal(got, created) {
				return "", fmt.Errorf("GetOrder differs from CreateOrder:\n  %v\n  %v", got, created)
			}
			return "proto.Equal", nil
		}},
		{"invalid order is INVALID_ARGUMENT", false, func() (string, error) {
			_, err := s.client.CreateOrder(ctx, &ordersv1.CreateOrderRequest{
				CustomerId: customer,
				Region:     region,
				Lines:      []*ordersv1.OrderLine{{Sku: sku, Quantity: 0, UnitPriceMinor: -1, Currency: "eur"}},
			})
			if err == nil {
				return "", errors.New("an order with quantity 0 was accepted")
			}
			d := ordersclient.Details(err)
			if d == nil || d.Code != codes.InvalidArgument {
				return "", fmt.Errorf("got %v, want INVALID_ARGUMENT", err)
			}
			if len(d.FieldViolations) == 0 {
				return "", fmt.Errorf("no BadRequest field violation in the status details: %s", d)
			}
			if _, ok := d.Violation("lines[0].quantity"); !ok {
				return "", fmt.Errorf("no violation of lines[0].quantity: %s", d)
			}
			if d.Reason != "INVALID_REQUEST" || d.Domain != ordersclient.ErrorDomain {
				return "", fmt.Errorf("ErrorInfo reason %q domain %q, want INVALID_REQUEST %s", d.Reason, d.Domain, ordersclient.ErrorDomain)
			}
			first := d.FieldViolations[0]
			return fmt.Sprintf("%d field violations (first: %s: %s), reason %s",
				len(d.FieldViolations), first.Field, first.Description, d.Reason), nil
		}},
		{"ConfirmOrder", true, func() (string, error) {
			order, err := s.client.ConfirmOrder(ctx, created.GetOrderId())
			if err != nil {
				return "", err
			}
			if order.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_CONFIRMED || order.GetVersion() != 2 {
				return "", fmt.Errorf("status %s version %d, want CONFIRMED version 2", order.GetStatus(), order.GetVersion())
			}
			if order.GetExpireTime() != nil {
				return "", fmt.Errorf("a confirmed order still has expire_time %v", order.GetExpireTime().AsTime())
			}
			return "CONFIRMED, version 2", nil
		}},
		{"ShipOrder", true, func() (string, error) {
			order, err := s.client.ShipOrder(ctx, created.GetOrderId())
			if err != nil {
				return "", err
			}
			if order.GetStatus() != ordersv1.OrderStatus_ORDER_STATUS_SHIPPED || order.GetVersion() != 3 {
				return "", fmt.Errorf("status %s version %d, want SHIPPED version 3", order.GetStatus(), order.GetVersion())
			}
			created = order
			return "SHIPPED, version 3", nil
		}},
		{"shipping again is ILLEGAL_TRANSITION", false, func() (string, error) {
			_, err := s.client.ShipOrder(ctx, created.GetOrderId())
			d := ordersclient.Details(err)
			if d == nil || d.Code != codes.FailedPrecondition || d.Reason != "ILLEGAL_TRANSITION" {
				return "", fmt.Errorf("got %v, want FAILED_PRECONDITION ILLEGAL_TRANSITION", err)
			}
			return d.String(), nil
		}},
		{"stock after shipping", false, func() (string, error) {
			resp, err := inventory.GetStock(ctx, &ordersv1.GetStockRequest{Sku: sku, Region: region})
			if err != nil {
				return "", err
			}
			want := map[string]int64{locA: 0, locB: 2}
			if len(resp.GetLevels()) != len(want) {
				return "", fmt.Errorf("%d stock levels, want %d: %v", len(resp.GetLevels()), len(want), resp.GetLevels())
			}
			for _, level := range resp.GetLevels() {
				if level.GetOnHand() != want[level.GetLocationId()] || level.GetReserved() != 0 {
					return "", fmt.Errorf("%s: on_hand %d reserved %d, want on_hand %d reserved 0",
						level.GetLocationId(), level.GetOnHand(), level.GetReserved(), want[level.GetLocationId()])
				}
			}
			return "on_hand A 0, B 2; nothing reserved", nil
		}},
		{"ListOrders finds the order", false, func() (string, error) {
			seen := 0
			for order, err := range s.client.ListOrders(ctx, &ordersv1.ListOrdersRequest{CustomerId: customer, PageSize: 10}) {
				if err != nil {
					return "", err
				}
				seen++
				if order.GetOrderId() != created.GetOrderId() {
					continue
				}
				if !proto.Equal(order, created) {
					return "", fmt.Errorf("listed order differs from the shipped one:\n  %v\n  %v", order, created)
				}
				return fmt.Sprintf("found %s (SHIPPED, version 3) among %d", order.GetOrderId(), seen), nil
			}
			return "", fmt.Errorf("%s not among the customer's %d orders", created.GetOrderId(), seen)
		}},
	}

	for i, step := range steps {
		if !s.check(step.name, step.fn) && step.required {
			if rest := len(steps) - i - 1; rest > 0 {
				fmt.Printf("stop: %d later checks need this one and were not run\n", rest)
			}
			return
		}
	}
}
