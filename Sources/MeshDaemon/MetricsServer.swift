import MeshMetrics
import NIOCore
import NIOHTTP1
import NIOPosix

/// `mesh-node run --metrics HOST:PORT`: `GET /metrics` over HTTP/1.1 answers the node's metrics snapshot in the
/// Prometheus text format (docs/metrics.md); any other path is 404, any other method on /metrics 405. Runs on the
/// node's event loop group; the snapshot itself is built on the node's loop (`snapshot`), never here.
enum MetricsServer {
    static func bind(_ address: SocketAddress, group: EventLoopGroup,
                     snapshot: @escaping @Sendable () -> EventLoopFuture<MetricsSnapshot>) throws -> Channel {
        try ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(MetricsHandler(snapshot: snapshot))
                }
            }
            .bind(to: address).wait()
    }
}

private final class MetricsHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let snapshot: @Sendable () -> EventLoopFuture<MetricsSnapshot>
    private var request: HTTPRequestHead?

    init(snapshot: @escaping @Sendable () -> EventLoopFuture<MetricsSnapshot>) { self.snapshot = snapshot }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break
        case .end:
            guard let head = request else { return }
            request = nil
            answer(head, context: context)
        }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.prefix { $0 != "?" }
        guard path == "/metrics" else { return respond(head, .notFound, "not found; the metrics are at /metrics\n", context: context) }
        guard head.method == .GET else { return respond(head, .methodNotAllowed, "only GET\n", context: context) }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        snapshot().hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let snapshot):
                handler.respond(head, .ok, snapshot.prometheusText(), contentType: MetricsSnapshot.contentType, context: context)
            case .failure(let error):
                handler.respond(head, .serviceUnavailable, "node not running (\(error))\n", context: context)
            }
        }
    }

    private func respond(_ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ body: String,
                         contentType: String = "text/plain; charset=utf-8", context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
        buffer.writeString(body)
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", String(buffer.readableBytes))])
        if !request.isKeepAlive { headers.add(name: "Connection", value: "close") }
        if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !request.isKeepAlive {
            let channel = context.channel
            done.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
