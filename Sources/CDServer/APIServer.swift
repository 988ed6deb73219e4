import CDProtocol
import Foundation
import Hummingbird
import Logging
import NIOCore

/// The HTTP API of the daemon (Hummingbird 2) in front of a `StateDirectory`: see `APIPaths` for
/// the endpoints. No training here: the trainer side reads and updates the same store.
public enum APIServer {
    public typealias Context = BasicRequestContext

    /// The router with every endpoint, the error middleware (JSON `{"error": …}` answers) and the
    /// token check.
    public static func router(
        state: StateDirectory, config: ServerConfig, services: APIServices = APIServices()
    ) -> Router<Context> {
        let router = Router(context: Context.self)
        router.add(middleware: APIErrorMiddleware<Context>())
        router.add(middleware: APIAuthMiddleware<Context>(config: config))
        let handlers = APIHandlers(state: state, config: config, services: services)

        router.get("/v1/health") { _, _ in try json(HealthResponse(worldSize: services.worldSize)) }
        router.get("/metrics") { _, _ in try handlers.metrics() }
        router.post("/v1/blobs") { request, _ in try await handlers.uploadBlob(request) }
        router.head("/v1/blobs/:sha") { _, context in try handlers.headBlob(context.parameters.require("sha")) }
        router.post("/v1/jobs") { request, _ in try await handlers.submit(request) }
        router.get("/v1/jobs") { request, _ in try handlers.list(request) }
        router.get("/v1/jobs/:id") { _, context in
            try json(try handlers.state.jobs.job(jobID(context)))
        }
        router.post("/v1/jobs/:id/cancel") { _, context in try handlers.cancel(jobID(context)) }
        router.get("/v1/jobs/:id/events") { request, context in try await handlers.events(request, jobID(context)) }
        router.get("/v1/jobs/:id/checkpoints") { _, context in try handlers.checkpoints(jobID(context)) }
        router.get("/v1/jobs/:id/checkpoints/:step/files") { _, context in
            try handlers.checkpointFiles(jobID(context), step: try step(context))
        }
        router.get("/v1/jobs/:id/checkpoints/:step/files/**") { _, context in
            try handlers.checkpointFile(
                jobID(context), step: try step(context), components: context.parameters.getCatchAll().map(String.init))
        }
        router.post("/v1/jobs/:id/samples") { request, context in try await handlers.sample(request, jobID(context)) }
        router.post("/v1/merges") { request, _ in try await handlers.merge(request) }
        return router
    }

    /// The application: `router` bound to `config.host:config.port` (validated first). `cdtrainerd
    /// serve` runs it with `runService()`; `onServerRunning` gets the bound channel (its
    /// `localAddress?.port` is the port when `config.port` is 0).
    public static func application(
        state: StateDirectory, config: ServerConfig, logger: Logger? = nil,
        services: APIServices = APIServices(),
        onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
    ) throws -> some ApplicationProtocol {
        try config.validate()
        return Application(
            router: router(state: state, config: config, services: services),
            configuration: ApplicationConfiguration(address: .hostname(config.host, port: config.port), serverName: nil),
            onServerRunning: onServerRunning,
            logger: logger ?? Logger(label: "cdtrainerd.api"))
    }

    // MARK: Helpers

    static func jobID(_ context: Context) throws -> String {
        let id = try context.parameters.require("id")
        guard JobID.isValid(id) else { throw JobStoreError.notFound(jobID: id) }
        return id
    }

    static func step(_ context: Context) throws -> Int {
        guard let s = context.parameters.get("step"), let n = Int(s), n >= 0 else {
            throw APIError(.notFound, "no such checkpoint step '\(BlobStore.printable(context.parameters.get("step") ?? ""))'")
        }
        return n
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try APICoding.encoder().encode(value)
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// The JSON answer for any error thrown by a handler.
    static func errorResponse(_ error: any Error, logger: Logger) -> Response {
        let status: HTTPResponse.Status
        var body: APIErrorResponse
        switch error {
        case let e as APIError:
            status = e.status
            body = e.body
        case let e as JobStoreError:
            status = .init(code: e.httpStatus)
            body = APIErrorResponse(error: e.description)
            if case let .missingBlobs(refs) = e {
                body.missingBlobs = refs.map { .init(fileName: $0.fileName, sha256: $0.sha256) }
            }
        case let e as any ServerError:
            status = .init(code: e.httpStatus)
            body = APIErrorResponse(error: e.description)
        case let e as JobFileError:
            status = .unprocessableContent
            body = APIErrorResponse(error: "invalid job spec: " + e.problems.map(\.description).joined(separator: "; "), problems: e.problems)
        case let e as any HTTPResponseError:
            status = e.status
            body = APIErrorResponse(error: e.status == .contentTooLarge ? "request body too large" : "\(e.status.reasonPhrase)")
        default:
            status = .internalServerError
            body = APIErrorResponse(error: "internal error")
        }
        if status.code >= 500 { logger.error("request failed: \(String(describing: error))") }
        return (try? json(body, status: status)) ?? Response(status: status)
    }
}

/// An error with an HTTP status and the JSON body to send.
struct APIError: Error, CustomStringConvertible {
    var status: HTTPResponse.Status
    var body: APIErrorResponse
    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.body = APIErrorResponse(error: message)
    }
    var description: String { "\(status.code): \(body.error)" }
}

/// Turns every thrown error into a JSON error answer.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return APIServer.errorResponse(error, logger: context.logger)
        }
    }
}

/// `Authorization: Bearer <token>` on every call (health optionally excepted). The header is never logged.
struct APIAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let config: ServerConfig
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if config.healthWithoutToken, request.method == .get, request.uri.path == APIPaths.health {
            return try await next(request, context)
        }
        guard config.authorizes(request.headers[.authorization]) else {
            let message = request.headers[.authorization] == nil
                ? "missing token: send 'Authorization: Bearer <token>' (the token is in the daemon's token file)"
                : "invalid token: the bearer token does not match the daemon's"
            var response = try APIServer.json(APIErrorResponse(error: message), status: .unauthorized)
            response.headers[.wwwAuthenticate] = "Bearer realm=\"cdtrainerd\""
            return response
        }
        return try await next(request, context)
    }
}
