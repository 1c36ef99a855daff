import org.gradle.api.tasks.Exec

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// Must match NCNN_VERSION in src/mfn_deploy/native/build.py (the export tools' ncnn).
val ncnnRelease = "20261020"
val ncnnDir = rootProject.file("third_party/ncnn-$ncnnRelease-android")

android {
    namespace = "com.mfndeploy.demo"
    compileSdk = 34
    ndkVersion = "26.3.11579264"

    defaultConfig {
        applicationId = "com.mfndeploy.demo"
        minSdk = 24
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a")
        }
        externalNativeBuild {
            cmake {
                arguments += listOf("-DNCNN_ANDROID_DIR=${ncnnDir.absolutePath}", "-DANDROID_STL=c++_static")
                cppFlags += listOf("-std=c++14")
            }
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            // A demo: sign release builds with the debug key so `assembleRelease` installs.
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.22.1"
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }

    // ncnn params/weights are read whole; compressing them only slows start-up.
    androidResources {
        noCompress += listOf("param", "bin")
    }
}

// Downloads and checks ncnn's prebuilt Android package once (see README.md).
val fetchNcnn by tasks.registering(Exec::class) {
    description = "Fetch ncnn-$ncnnRelease-android.zip into third_party/"
    onlyIf { !ncnnDir.resolve("arm64-v8a/lib/cmake/ncnn/ncnnConfig.cmake").isFile }
    commandLine("bash", rootProject.file("tools/fetch_ncnn_android.sh").absolutePath)
}
tasks.named("preBuild") { dependsOn(fetchNcnn) }

dependencies {
    val camerax = "1.3.4"
    implementation("androidx.core:core-ktx:1.13.1")
    implementation("androidx.activity:activity-ktx:1.9.1")
    implementation("androidx.camera:camera-core:$camerax")
    implementation("androidx.camera:camera-camera2:$camerax")
    implementation("androidx.camera:camera-lifecycle:$camerax")
    implementation("androidx.camera:camera-view:$camerax")
}
