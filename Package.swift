// swift-tools-version:6.0
import PackageDescription

// Hot loops are written with SIMD8<Float>; without a target CPU Swift compiles them for
// baseline x86-64 (SSE2, FMA as a libm call). Haswell (AVX2 + FMA, 2013 and later) is the floor
// for the machines cdtrainer runs on; release builds only, so debug builds stay portable.
// The numeric core is also optimized in debug builds: its loops run 50–100× slower at -Onone,
// which made the whole-model gradient tests take minutes; everything above it stays debuggable.
let debugOptimized: SwiftSetting = .unsafeFlags(["-O"], .when(configuration: .debug))
#if arch(x86_64)
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"], .when(configuration: .release))]
#else
let kernelFlags: [SwiftSetting] = []
#endif

let package = Package(
    name: "cdtrainer",
    products: [
        .library(name: "CDTensor", targets: ["CDTensor"]),
        .library(name: "CDModels", targets: ["CDModels"]),
        .library(name: "CDTraining", targets: ["CDTraining"]),
        .library(name: "CDImages", targets: ["CDImages"]),
        .library(name: "CDProtocol", targets: ["CDProtocol"]),
        .executable(name: "cdtrainerd", targets: ["cdtrainerd"]),
        .executable(name: "cdctl", targets: ["cdctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(
            name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(
            name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"])]),
        .systemLibrary(
            name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libturbojpeg",
            providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(
            name: "CWebP", path: "Sources/CWebP", pkgConfig: "libwebp",
            providers: [.apt(["libwebp-dev"])]),
        .target(name: "CDTensor", dependencies: ["COpenBLAS", "CDNNL"], swiftSettings: kernelFlags + [debugOptimized]),
        .target(
            name: "CDModels", dependencies: ["CDTensor", "CPNG"],
            resources: [.copy("Resources/clip-merges.txt")], swiftSettings: kernelFlags),
        .target(name: "CDImages", dependencies: ["CPNG", "CJPEG", "CWebP"], swiftSettings: kernelFlags + [debugOptimized]),
        .target(name: "CDProtocol", dependencies: [.product(name: "TOMLKit", package: "TOMLKit")]),
        // Data parallelism: the Communicator protocol (pure Swift) and its OpenMPI implementation,
        // the only code that imports CMPI besides `cdtrainerd version`.
        .target(name: "CDDistributed"),
        .target(name: "CDDistributedMPI", dependencies: ["CDDistributed", "CMPI"]),
        .target(
            name: "CDTraining",
            dependencies: ["CDTensor", "CDModels", "CDImages", "CDProtocol", "CDDistributed", .product(name: "Crypto", package: "swift-crypto")],
            resources: [.copy("Resources/regularization-captions.txt")],
            swiftSettings: kernelFlags),
        .executableTarget(
            name: "cdtrainerd",
            dependencies: [
                "CDTensor", "CDModels", "CDImages", "CDTraining", "CDProtocol", "CMPI", "COpenBLAS", "CDDistributed", "CDDistributedMPI",
                "CDDaemon", "CDServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: kernelFlags),
        // `cdtrainerd serve` without MPI or HTTP specifics: the command loop every rank runs, job
        // preparation and bookkeeping on rank 0, sampling from checkpoints, signals, metrics.
        .target(
            name: "CDDaemon",
            dependencies: ["CDTraining", "CDServer", "CDProtocol", "CDDistributed", "CDModels", "CDTensor"],
            swiftSettings: kernelFlags),
        // Daemon state: job store (SQLite via GRDB), blob store; never the numeric targets.
        .target(
            name: "CDServer",
            dependencies: [
                "CDProtocol",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]),
        // The API client of `cdctl`: HTTP (URLSession), config, retries, checkpoint file selection;
        // never the numeric targets nor the server. TOMLKit (already in CDProtocol) reads the config file.
        .target(
            name: "CDClient",
            dependencies: [
                "CDProtocol",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]),
        .executableTarget(
            name: "cdctl",
            dependencies: ["CDClient", "CDProtocol", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // The daemon loop in process (world of one) and `cdtrainerd serve` + `cdctl` under mpirun.
        .testTarget(
            name: "CDDaemonTests",
            dependencies: ["CDDaemon", "CDServer", "CDProtocol", "CDTraining", "CDModels", "CDTensor", "CDDistributed", "CDTestSupport"]),
        // Fixture lookup and parity expectations shared by the model and training tests.
        .target(name: "CDTestSupport", dependencies: ["CDTensor"], path: "Tests/CDTestSupport"),
        .testTarget(name: "CDTensorTests", dependencies: ["CDTensor"]),
        .testTarget(name: "CDModelsTests", dependencies: ["CDModels", "CDTensor", "CDTestSupport"]),
        .testTarget(name: "CDTrainingTests", dependencies: ["CDTraining", "CDModels", "CDTensor", "CDTestSupport"]),
        .testTarget(name: "CDImagesTests", dependencies: ["CDImages", "CJPEG", "CPNG"], exclude: ["Fixtures"]),
        .testTarget(name: "CDProtocolTests", dependencies: ["CDProtocol"]),
        .testTarget(
            name: "CDDistributedTests",
            dependencies: ["CDDistributed", "CDTraining", "CDProtocol", "CDModels", "CDTensor", "CDTestSupport"]),
        .testTarget(
            name: "CDServerTests",
            dependencies: [
                "CDServer", "CDProtocol", "CDTestSupport", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]),
        // Drives CDClient (and the cdctl binary) against a real APIServer on loopback.
        .testTarget(
            name: "CDClientTests",
            dependencies: [
                "CDClient", "CDServer", "CDProtocol", "CDTestSupport", "cdctl",
                .product(name: "Hummingbird", package: "hummingbird"),
            ]),
    ]
)
