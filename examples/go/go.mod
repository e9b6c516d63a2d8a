module thresig.example/ffi

go 1.19
