import Foundation
import HTTP
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Tests against a real server on an ephemeral loopback port, with raw sockets and curl.
/// Serialized: timing-based tests share two cores.
@Suite(.serialized) struct LiveServerTests {
    // MARK: - Basics

    @Test func keepAliveConnectionIsReusedAndHeadersAreSet() throws {
        let server = try startTestServer(handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        #expect(server.port > 0)
        let client = try RawClient(port: server.port)
        for i in 0..<3 {
            client.send("GET /item\(i) HTTP/1.1\r\nHost: t\r\n\r\n")
            let response = try client.readResponse()
            #expect(response.statusCode == 200)
            #expect(response.text == "GET /item\(i) 0")
            #expect(response.header("Server") == "CastServe")
            #expect(response.header("Date")?.hasSuffix(" GMT") == true)
            #expect(response.header("X-Request-Id")?.count == 32)
            #expect(response.header("Connection") == nil)
        }
        #expect(server.openConnectionCount == 1)
        client.send("GET /echo-id HTTP/1.1\r\nHost: t\r\nX-Request-Id: client-id_1.2:3\r\n\r\n")
        #expect(try client.readResponse().header("X-Request-Id") == "client-id_1.2:3")
        client.send("GET /bad-id HTTP/1.1\r\nHost: t\r\nX-Request-Id: has space\r\n\r\n")
        #expect(try client.readResponse().header("X-Request-Id") != "has space")
        client.send("GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        let last = try client.readResponse()
        #expect(last.header("Connection") == "close")
        #expect(client.isClosedByServer(timeout: 2))
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let server = try startTestServer(handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send(
            "GET /sleep?50 HTTP/1.1\r\nHost: t\r\n\r\nPOST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz"
                + "GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(try client.readResponse().text == "GET /sleep 0")
        #expect(try client.readResponse().text == "POST /b 3")
        #expect(try client.readResponse().text == "GET /c 0")
    }

    @Test func http10ClosesUnlessKeepAliveAndNeverGetsChunked() throws {
        let server = try startTestServer { request, responder in
            if request.path == "/stream" {
                let stream = responder.startStream(headers: HTTPHeaders([("Content-Type", "text/plain")]))
                try? stream.write("part1,")
                try? stream.write("part2")
                stream.finish()
            } else {
                echoHandler(request, responder)
            }
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let plain = try RawClient(port: server.port)
        plain.send("GET /a HTTP/1.0\r\n\r\n")
        let first = try plain.readResponse()
        #expect(first.text == "GET /a 0")
        #expect(first.header("Connection") == "close")
        #expect(plain.isClosedByServer(timeout: 2))

        let kept = try RawClient(port: server.port)
        kept.send("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        let second = try kept.readResponse()
        #expect(second.header("Connection") == "keep-alive")
        kept.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        let streamed = try kept.readResponse()
        #expect(streamed.header("Transfer-Encoding") == nil)
        #expect(streamed.header("Content-Length") == nil)
        #expect(streamed.header("Connection") == "close")
        #expect(streamed.text == "part1,part2")
    }

    @Test func headSendsHeadersOnlyAndKeepsTheConnection() throws {
        let server = try startTestServer { request, responder in
            if request.path == "/stream" {
                let stream = responder.startEventStream()
                try? stream.sendEvent("never on the wire")
                stream.finish()
            } else {
                responder.send(HTTPResponse(contentType: "text/plain", body: "twelve bytes"))
            }
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        let head = try client.readResponse(forHead: true)
        #expect(head.statusCode == 200)
        #expect(head.header("Content-Length") == "12")
        client.send("HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        let streamHead = try client.readResponse(forHead: true)
        #expect(streamHead.header("Content-Type") == "text/event-stream")
        client.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        // Had a body followed either HEAD response, this would read it instead of the GET's response.
        let get = try client.readResponse()
        #expect(get.statusCode == 200)
        #expect(get.text == "twelve bytes")
    }

    @Test func corsPreflightIsAnsweredAndResponsesCarryTheOrigin() throws {
        let calls = Box(0)
        let server = try startTestServer({ $0.corsAllowedOrigin = "*" }) { request, responder in
            calls.update { $0 += 1 }
            echoHandler(request, responder)
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send(
            "OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n"
                + "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n")
        let preflight = try client.readResponse()
        #expect(preflight.statusCode == 204)
        #expect(preflight.header("Access-Control-Allow-Origin") == "*")
        #expect(preflight.header("Access-Control-Allow-Methods")?.contains("POST") == true)
        #expect(preflight.header("Access-Control-Allow-Headers")?.contains("Authorization") == true)
        #expect(preflight.header("Access-Control-Allow-Headers")?.contains("Content-Type") == true)
        #expect(calls.get == 0)
        client.send("GET /x HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n\r\n")
        let get = try client.readResponse()
        #expect(get.header("Access-Control-Allow-Origin") == "*")
        #expect(calls.get == 1)

        let noCors = try startTestServer(handler: echoHandler)
        defer { noCors.shutdown(drainDeadline: .seconds(1)) }
        let other = try RawClient(port: noCors.port)
        other.send("OPTIONS / HTTP/1.1\r\nHost: t\r\nAccess-Control-Request-Method: POST\r\n\r\n")
        let handled = try other.readResponse()
        #expect(handled.text == "OPTIONS / 0")
        #expect(handled.header("Access-Control-Allow-Origin") == nil)
    }

    @Test func eventsReportFinishedRefusedAndRejected() throws {
        let events = Box<[HTTPServerEvent]>([])
        let server = HTTPServer(
            configuration: HTTPServerConfiguration(host: "127.0.0.1", port: 0, maxConnections: 1),
            eventSink: { event in events.update { $0.append(event) } }, handler: echoHandler)
        try server.start()
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("GET /logged HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc\r\n\r\n")
        _ = try client.readResponse()
        let extra = try RawClient(port: server.port)
        #expect(try extra.readResponse().statusCode == 503)
        client.send("GET / HTTP/1.1\r\nHost : t\r\n\r\n")
        #expect(try client.readResponse().statusCode == 400)
        usleep(50_000)
        let seen = events.get
        #expect(seen.count == 3)
        var finished = false, refused = false, rejected = false
        for event in seen {
            switch event {
            case .requestFinished(let record):
                finished = record.target == "/logged" && record.status == .ok && record.requestID == "abc"
                    && !record.clientWentAway
            case .requestRefused(let status, let reason):
                refused = status == .badRequest && reason.contains("Host : t")
            case .connectionRejected(let max):
                rejected = max == 1
            case .tlsHandshakeFailed:
                break
            }
        }
        #expect(finished && refused && rejected)
    }

    @Test func ipv6LoopbackAndBindConflict() throws {
        let server = try startTestServer(handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let clash = HTTPServer(configuration: HTTPServerConfiguration(host: "127.0.0.1", port: server.port), handler: echoHandler)
        #expect(throws: HTTPServerError.self) { try clash.start() }
        #expect(throws: HTTPServerError.self) {
            try HTTPServer(configuration: HTTPServerConfiguration(host: "not an address", port: 0), handler: echoHandler).start()
        }
        #expect(throws: HTTPServerError.self) {
            try HTTPServer(configuration: HTTPServerConfiguration(port: 70000), handler: echoHandler).start()
        }
        guard let v6 = try? startTestServer({ $0.host = "::1" }, handler: echoHandler) else { return }  // no IPv6 here
        defer { v6.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: v6.port, host: "::1")
        client.send("GET /v6 HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(try client.readResponse().text == "GET /v6 0")
    }

    // MARK: - Bodies

    @Test func expectContinueIsAnsweredBeforeTheBody() throws {
        let server = try startTestServer(handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        let interim = try client.read(until: "\r\n\r\n")
        #expect(interim == "HTTP/1.1 100 Continue\r\n\r\n")
        client.send("hello")
        #expect(try client.readResponse().text == "POST /up 5")

        // Too large: refused with 413 instead of 100 Continue, so the client never sends the body.
        let small = try startTestServer({ $0.maxBodyBytes = 1000 }, handler: echoHandler)
        defer { small.shutdown(drainDeadline: .seconds(1)) }
        let refused = try RawClient(port: small.port)
        refused.send("POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        #expect(try refused.readResponse().statusCode == 413)
    }

    @Test func curlUploadsWithExpectContinueAndChunked() throws {
        let server = try startTestServer(handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("http-test-\(getpid()).bin")
        try Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let url = "http://127.0.0.1:\(server.port)/upload"
        let expect = try runCurl(["-H", "Expect: 100-continue", "--data-binary", "@\(file.path)", url])
        #expect(expect.0 == 0)
        #expect(expect.1 == "POST /upload 3000000")
        let chunked = try runCurl(["-H", "Transfer-Encoding: chunked", "--data-binary", "@\(file.path)", url])
        #expect(chunked.0 == 0)
        #expect(chunked.1 == "POST /upload 3000000")
        let http10 = try runCurl(["--http1.0", url])
        #expect(http10.1 == "GET /upload 0")
    }

    @Test func oversizeHeaderBodyAndSmugglingAreRefusedAndClosed() throws {
        let server = try startTestServer({ $0.maxHeaderBytes = 1024; $0.maxBodyBytes = 2048 }, handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let cases: [(String, Int)] = [
            ("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + String(repeating: "h", count: 2000) + "\r\n\r\n", 431),
            ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n", 413),
            ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
            ("GET / HTTP/1.1\r\nHost: t\r\nFolded: a\r\n b\r\n\r\n", 400),
            ("GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505),
        ]
        for (raw, status) in cases {
            let client = try RawClient(port: server.port)
            client.send(raw)
            let response = try client.readResponse()
            #expect(response.statusCode == status, "\(raw.prefix(40))")
            #expect(response.header("Connection") == "close")
            #expect(!response.text.isEmpty)
            #expect(client.isClosedByServer(timeout: 3))
        }
    }

    // MARK: - Streaming

    @Test func serverSentEventsArriveOneByOneFromAnotherThread() throws {
        let released = DispatchSemaphore(value: 0)
        let server = try startTestServer { request, responder in
            guard request.path == "/v1/chat/completions" else { return echoHandler(request, responder) }
            let stream = responder.startEventStream()
            // Async style: return at once; a producer thread (like the engine) feeds the stream.
            Thread.detachNewThread {
                try? stream.sendEvent("{\"n\":1}")
                released.wait()  // The second event waits until the client has seen the first.
                try? stream.sendEvent("line one\nline two", event: "multi", id: "7")
                try? stream.sendEvent("[DONE]")
                stream.finish()
            }
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        let head = try client.read(until: "\r\n\r\n")
        #expect(head.contains("Content-Type: text/event-stream"))
        #expect(head.contains("Transfer-Encoding: chunked"))
        let firstChunk = try client.read(until: "\n\n\r\n")
        #expect(firstChunk.hasSuffix("data: {\"n\":1}\n\n\r\n"))
        released.signal()
        let rest = try client.read(until: "0\r\n\r\n")
        #expect(rest.contains("event: multi\nid: 7\ndata: line one\ndata: line two\n\n"))
        #expect(rest.contains("data: [DONE]\n\n"))
        // The connection stays usable after the stream.
        client.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(try client.readResponse().statusCode == 200)
    }

    @Test func curlReadsAnEventStream() throws {
        let server = try startTestServer { _, responder in
            let stream = responder.startEventStream()
            for i in 0..<3 {
                try? stream.sendEvent("event \(i)")
                usleep(10_000)
            }
            stream.finish()
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let (status, output) = try runCurl(["-N", "http://127.0.0.1:\(server.port)/events"])
        #expect(status == 0)
        #expect(output == "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n")
    }

    @Test func midStreamDisconnectFiresTheCallbackAsync() throws {
        let disconnected = DispatchSemaphore(value: 0)
        let writeFailed = Box(false)
        let server = try startTestServer { _, responder in
            let stream = responder.startEventStream()
            responder.onDisconnect { disconnected.signal() }
            Thread.detachNewThread {
                while true {
                    do {
                        try stream.sendEvent("token")
                    } catch {
                        writeFailed.set((error as? HTTPServerError) == .clientDisconnected)
                        return
                    }
                    usleep(20_000)
                }
            }
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        _ = try client.read(until: "data: token\n\n")
        shutdown(client.fd, Int32(SHUT_RDWR))
        #expect(disconnected.wait(timeout: .now() + 3) == .success)
        usleep(100_000)
        #expect(writeFailed.get)
    }

    @Test func midStreamDisconnectIsSeenBySynchronousHandler() throws {
        let disconnected = DispatchSemaphore(value: 0)
        let server = try startTestServer { _, responder in
            let stream = responder.startEventStream()
            stream.onDisconnect { disconnected.signal() }
            for _ in 0..<500 {
                if stream.isClientGone { return }
                do { try stream.sendEvent("token") } catch { return }
                usleep(10_000)
            }
            stream.finish()
        }
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        _ = try client.read(until: "data: token\n\n")
        shutdown(client.fd, Int32(SHUT_RDWR))
        #expect(disconnected.wait(timeout: .now() + 3) == .success)
    }

    @Test func pendingAsyncResponseNoticesDisconnect() throws {
        let disconnected = DispatchSemaphore(value: 0)
        let handlerReturned = DispatchSemaphore(value: 0)
        let server = try startTestServer { _, responder in
            // Async style, non-streaming: the answer would come later from another thread.
            responder.onDisconnect { disconnected.signal() }
            handlerReturned.signal()
        }
        defer { server.shutdown(drainDeadline: .milliseconds(200)) }
        let client = try RawClient(port: server.port)
        client.send("POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        #expect(handlerReturned.wait(timeout: .now() + 2) == .success)
        shutdown(client.fd, Int32(SHUT_RDWR))
        #expect(disconnected.wait(timeout: .now() + 2) == .success)
    }

    @Test func clientThatStopsReadingIsDroppedAfterWriteTimeout() throws {
        let outcome = Box<HTTPServerError?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let server = try startTestServer({ $0.writeTimeout = .milliseconds(300) }) { request, responder in
            guard request.path == "/flood" else { return echoHandler(request, responder) }
            let stream = responder.startStream()
            let block = Data(repeating: 0x61, count: 64 * 1024)
            for _ in 0..<100_000 {
                do {
                    try stream.write(block)
                } catch {
                    outcome.set(error as? HTTPServerError)
                    break
                }
            }
            finished.signal()
        }
        defer { server.shutdown(drainDeadline: .milliseconds(200)) }
        let stalled = try RawClient(port: server.port)
        stalled.send("GET /flood HTTP/1.1\r\nHost: t\r\n\r\n")
        let other = try RawClient(port: server.port)
        other.send("GET /meanwhile HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(try other.readResponse().text == "GET /meanwhile 0")
        #expect(finished.wait(timeout: .now() + 5) == .success)
        #expect(outcome.get == .clientDisconnected)
    }

    // MARK: - Limits and timeouts

    @Test func connectionsBeyondTheCapGet503() throws {
        let server = try startTestServer({ $0.maxConnections = 2 }, handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let a = try RawClient(port: server.port)
        let b = try RawClient(port: server.port)
        let deadline = Date().addingTimeInterval(2)
        while server.openConnectionCount < 2 && Date() < deadline { usleep(5000) }
        #expect(server.openConnectionCount == 2)
        let c = try RawClient(port: server.port)
        c.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        let refused = try c.readResponse()
        #expect(refused.statusCode == 503)
        #expect(refused.header("Connection") == "close")
        #expect(refused.header("Retry-After") == "1")
        // The admitted connections are still served.
        a.send("GET /a HTTP/1.1\r\nHost: t\r\n\r\n")
        b.send("GET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(try a.readResponse().text == "GET /a 0")
        #expect(try b.readResponse().text == "GET /b 0")
    }

    @Test func slowLorisIsCutOffWhileOthersAreServed() throws {
        let server = try startTestServer({
            $0.headerReadTimeout = .milliseconds(600)
            $0.bodyReadTimeout = .milliseconds(600)
        }, handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let loris = try RawClient(port: server.port)
        let trickleBody = try RawClient(port: server.port)
        trickleBody.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        let healthy = try RawClient(port: server.port)
        let started = Date()
        let header = Array("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n".utf8)
        var served = 0
        var lorisGot: RawResponse?
        for byte in header {
            loris.send([byte])
            trickleBody.send("x")
            healthy.send("GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
            if (try? healthy.readResponse())?.statusCode == 200 { served += 1 }
            usleep(50_000)
            if Date().timeIntervalSince(started) > 1.0 { break }
        }
        lorisGot = try loris.readResponse()
        #expect(lorisGot?.statusCode == 408)
        #expect(loris.isClosedByServer(timeout: 2))
        #expect(try trickleBody.readResponse().statusCode == 408)
        #expect(served >= 10)
        healthy.send("GET /still HTTP/1.1\r\nHost: t\r\n\r\n")
        #expect(try healthy.readResponse().text == "GET /still 0")
    }

    @Test func idleKeepAliveConnectionIsClosedAfterTheTimeout() throws {
        let server = try startTestServer({ $0.idleKeepAliveTimeout = .milliseconds(300) }, handler: echoHandler)
        defer { server.shutdown(drainDeadline: .seconds(1)) }
        let client = try RawClient(port: server.port)
        client.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        _ = try client.readResponse()
        let started = Date()
        #expect(client.isClosedByServer(timeout: 3))
        #expect(Date().timeIntervalSince(started) < 2)
    }

    // MARK: - Drain

    @Test func drainFinishesInFlightRequestThenReturns() throws {
        let server = try startTestServer(handler: echoHandler)
        let busy = try RawClient(port: server.port)
        let idle = try RawClient(port: server.port)
        idle.send("GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        _ = try idle.readResponse()
        busy.send("GET /sleep?400 HTTP/1.1\r\nHost: t\r\n\r\n")
        usleep(100_000)
        let returned = Box(false)
        let done = DispatchSemaphore(value: 0)
        let started = Date()
        Thread.detachNewThread {
            server.shutdown(drainDeadline: .seconds(5))
            returned.set(true)
            done.signal()
        }
        #expect(idle.isClosedByServer(timeout: 1))
        let response = try busy.readResponse()
        #expect(response.text == "GET /sleep 0")
        #expect(response.header("Connection") == "close")
        #expect(done.wait(timeout: .now() + 3) == .success)
        #expect(returned.get)
        #expect(Date().timeIntervalSince(started) < 2)
        #expect(server.openConnectionCount == 0)
        #expect(throws: TestClientError.self) { _ = try RawClient(port: server.port) }
    }

    @Test func drainDeadlineCutsAStreamThatNeverEnds() throws {
        let disconnected = DispatchSemaphore(value: 0)
        let server = try startTestServer { _, responder in
            let stream = responder.startEventStream()
            responder.onDisconnect { disconnected.signal() }
            try? stream.sendEvent("first and only")
        }
        let client = try RawClient(port: server.port)
        client.send("GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
        _ = try client.read(until: "data: first and only\n\n")
        let started = Date()
        server.shutdown(drainDeadline: .milliseconds(300))
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed >= 0.25 && elapsed < 2)
        #expect(disconnected.wait(timeout: .now() + 1) == .success)
        #expect(server.openConnectionCount == 0)
    }
}
